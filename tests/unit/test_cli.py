"""The command as a user runs it: a real process, its exit codes and output."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).parent.parent.parent
CORPUS = ROOT / "tests" / "corpus" / "invalid"


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "manifest_runner", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_version_and_help() -> None:
    from manifest_runner import __version__

    assert run("--version").stdout.strip() == f"consul-manifest {__version__}"
    out = run("--help").stdout
    for command in ("validate", "schema", "agent"):
        assert command in out
    assert "Exit codes" in out


def test_validate_never_contacts_consul() -> None:
    connections: list[object] = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        listener.settimeout(0.2)
        port = listener.getsockname()[1]
        stop = threading.Event()

        def accept() -> None:
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except OSError:
                    continue
                connections.append(conn)
                conn.close()

        thread = threading.Thread(target=accept)
        thread.start()
        try:
            env = {"CONSUL_HTTP_ADDR": f"127.0.0.1:{port}"}
            ok = run("validate", str(ROOT / "examples"), env=env)
            bad = run("validate", str(CORPUS / "port-too-large.yaml"), env=env)
        finally:
            stop.set()
            thread.join()
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("valid: ")
    assert bad.returncode == 3
    assert connections == []


def test_invalid_manifests_exit_3_without_a_traceback() -> None:
    for name in ("alias-bomb.yaml", "not-utf8.yaml", "tabs-for-indentation.yaml", "empty-file.yaml"):
        result = run("validate", str(CORPUS / name))
        assert result.returncode == 3, (name, result.stderr)
        assert "Traceback" not in result.stderr + result.stdout
        assert re.match(re.escape(str(CORPUS / name)) + r":\d+:\d+: ", result.stderr), result.stderr


def test_missing_paths_exit_3() -> None:
    result = run("validate", "/nonexistent/manifest.yaml")
    assert result.returncode == 3
    assert "/nonexistent/manifest.yaml: no such file or folder" in result.stderr
