"""A canary token is never printed: not in any output stream, file, cache, or log of any command, whatever fails."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from manifest_runner.testing.devagent import DevAgent
from tests.conftest import ACL_TOKEN
from tests.faults.proxy import count, fault_proxy
from tests.integration.helpers import write
from tests.integration.runproc import wait_for

pytestmark = pytest.mark.consul

CANARY = "c4n4ry-7d9f-4b8e-a1c2-5e6f7a8b9c0d"


def run(addr: str, *args: str, env: dict[str, str], timeout: float = 60) -> tuple[int, str]:
    base = {k: v for k, v in os.environ.items() if not (k.startswith("CONSUL_") and k != "CONSUL_BIN")}
    done = subprocess.run(
        [sys.executable, "-m", "manifest_runner", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**base, "CONSUL_HTTP_ADDR": addr, "CONSUL_MANIFEST_DEBUG": "1", **env},
    )
    return done.returncode, done.stdout + done.stderr


def files_under(folder: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in folder.rglob("*") if p.is_file())


def test_the_canary_never_shows(consul_acl: DevAgent, tmp_path: Path, unique: str) -> None:
    owner = f"canary-{unique}"
    path = write(
        tmp_path,
        "m.yaml",
        f"""
        version: 1
        owner: {owner}
        services: [{{name: {owner}, port: 1}}]
        kv: {{prefix: {owner}/, enforce: {{a: 1}}}}
        dependencies:
          X: {{kv: {owner}/a, fallback: f}}
        outputs: {{env_file: out.env, json_file: out.json}}
        """,
    )
    token_file = tmp_path / "token"
    cache = tmp_path / "cache"
    seen: list[str] = []
    environments = [
        {"CONSUL_HTTP_TOKEN": CANARY},  # denied everywhere (not a real token)
        {"CONSUL_HTTP_TOKEN": CANARY + "\n"},  # trimmed, then denied
        {"CONSUL_HTTP_TOKEN": CANARY + "\u00e9"},  # cannot be a header: refused, named by its source
        {"CONSUL_HTTP_TOKEN_FILE": str(token_file)},
    ]
    token_file.write_text(CANARY + "\r\n")
    commands = [
        ["validate", str(path)],
        ["plan", str(path)],
        ["plan", "--output", "json", str(path)],
        ["apply", str(path)],
        ["destroy", "--yes", str(path)],
        ["render", "--cache-dir", str(cache), str(path)],
        ["render", "--cache-dir", str(cache), "-o", "-", "--format", "json", str(path)],
        ["exec", "--cache-dir", str(cache), str(path), "--", "env"],
        ["exec", "--cache-dir", str(cache), "--pass-token", str(path), "--", "true"],
    ]
    for env in environments:
        for command in commands:
            count("canary token checked")
            _, output = run(consul_acl.http_addr, *command, env=env)
            seen.append(output)
        # through a proxy that answers garbage too
        with fault_proxy(consul_acl.ports.http) as proxy:
            proxy.inject("nonjson200")
            _, output = run(proxy.address, "plan", str(path), env=env)
            seen.append(output)
    # run, with the status endpoint, stopped by SIGTERM
    log = tmp_path / "run.log"
    with log.open("w") as handle:
        base = {k: v for k, v in os.environ.items() if not (k.startswith("CONSUL_") and k != "CONSUL_BIN")}
        process = subprocess.Popen(
            [sys.executable, "-m", "manifest_runner", "run", "--cache-dir", str(cache), str(path)],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env={**base, "CONSUL_HTTP_ADDR": consul_acl.http_addr, "CONSUL_HTTP_TOKEN": CANARY},
        )
        wait_for(lambda: "denied" in log.read_text() or "403" in log.read_text(), what="run saw the denial")
        process.send_signal(signal.SIGTERM)
        process.wait(30)
    seen.append(log.read_text())
    seen.append(files_under(tmp_path / "cache") if (tmp_path / "cache").exists() else "")
    seen.append("".join((tmp_path / n).read_text() for n in ("out.env", "out.json") if (tmp_path / n).exists()))
    everything = "\n".join(seen)
    assert CANARY not in everything
    assert CANARY[:12] not in everything  # not even a piece of it
    assert "Traceback" not in everything.replace("CONSUL_MANIFEST_DEBUG", "")  # debug asked, but nothing crashed
    assert ACL_TOKEN not in everything
