"""Bad local inputs (flags, files, caches, links, records written by hand): a documented exit code and a message a
user can act on, never a traceback; secrets land in files only their owner can read."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from manifest_runner.marks import lock_key, record_key
from manifest_runner.testing.devagent import DevAgent, free_port
from tests.faults.proxy import count
from tests.integration.helpers import call, kv_put, run_process, services, write
from tests.integration.runproc import RunProcess, wait_for

pytestmark = pytest.mark.consul


def no_traceback(result: subprocess.CompletedProcess[str]) -> str:
    text = result.stdout + result.stderr
    assert "Traceback" not in text, text
    return text


@pytest.mark.parametrize(
    ("listen", "code"),
    [("0.0.0.0:x", 3), ("127.0.0.1:abc", 3), ("127.0.0.1:70000", 3), ("[::1:9", 3), ("::1:9", 3), ("nohost", 3)],
)
def test_bad_listen_values_are_usage_errors(consul: DevAgent, tmp_path: Path, listen: str, code: int) -> None:
    path = write(tmp_path, "m.yaml", "version: 1\nowner: listen\n")
    count("bad --listen value")
    result = run_process(consul.http_addr, "run", "--listen", listen, str(path))
    assert result.returncode == code, no_traceback(result)
    assert "--listen" in result.stderr


def test_a_port_in_use_is_one_line_and_exit_1(consul: DevAgent, tmp_path: Path) -> None:
    import socket

    path = write(tmp_path, "m.yaml", "version: 1\nowner: inuse\n")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        count("--listen port in use")
        result = run_process(consul.http_addr, "run", "--listen", f"127.0.0.1:{taken.getsockname()[1]}", str(path))
    assert result.returncode == 1, no_traceback(result)
    assert "in use" in result.stderr.lower()


def test_missing_or_unusable_tls_files_exit_3(consul: DevAgent, tmp_path: Path) -> None:
    path = write(tmp_path, "m.yaml", "version: 1\nowner: tlsfiles\n")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate")
    for env in (
        {"CONSUL_CACERT": str(tmp_path / "missing.pem"), "CONSUL_HTTP_SSL": "true"},
        {"CONSUL_CACERT": str(garbage), "CONSUL_HTTP_SSL": "true"},
    ):
        count("unusable TLS file")
        result = run_process(consul.http_addr, "plan", str(path), env=env)
        assert result.returncode == 3, no_traceback(result)
        assert "CONSUL_CACERT" in result.stderr or "TLS" in result.stderr


@pytest.mark.parametrize(
    "cache",
    [
        '{"entries":{"DB":"str"}}',
        '{"entries":[1,2]}',
        "[" * 100_000,
        '{"entries":{"DB":{"spec":"x","value":1,"resolved_at":"now"}}}',
        "\x00\x01binary",
        '{"entries":{"DB":{"spec":"S","value":"cached:1","resolved_at":1e300}}}',
    ],
    ids=["string-entry", "list", "deep", "wrong-types", "binary", "future"],
)
def test_a_corrupt_cache_never_stops_a_render(consul: DevAgent, tmp_path: Path, unique: str, cache: str) -> None:
    path = write(
        tmp_path,
        "m.yaml",
        f"version: 1\nowner: cc-{unique}\ndependencies:\n  DB: {{service: none-{unique}, fallback: 'f:1'}}\n",
    )
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / f"cc-{unique}.json").write_text(cache)
    count("corrupt cache")
    result = run_process("127.0.0.1:1", "render", "--cache-dir", str(folder), "-o", "-", str(path))
    assert result.returncode == 0, no_traceback(result)
    assert "DB=f:1" in result.stdout
    if cache.startswith('{"entries":{"DB":{"spec":"S"'):
        return  # a future time that was never ours (spec differs): simply unused
    assert "cache" in result.stderr


def test_outputs_holding_secrets_are_private_and_links_are_not_followed_out(
    consul: DevAgent, tmp_path: Path, unique: str
) -> None:
    kv_put(consul, f"{unique}/password", b"s3cret")
    path = write(
        tmp_path,
        "m.yaml",
        f"version: 1\nowner: sec-{unique}\ndependencies:\n  PW: {{kv: {unique}/password}}\n"
        "outputs: {env_file: out.env, json_file: out.json}\n",
    )
    os.umask(0o022)
    result = run_process(consul.http_addr, "render", "--no-cache", str(path))
    assert result.returncode == 0, no_traceback(result)
    for name in ("out.env", "out.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    for name in ("out.env", "out.json"):
        (tmp_path / name).unlink()
    elsewhere = tmp_path.parent / f"stolen-{unique}"
    (tmp_path / "out.env").symlink_to(elsewhere)  # dangling, and outside the folder
    count("dangling symlink at an output")
    result = run_process(consul.http_addr, "render", "--no-cache", str(path))
    assert result.returncode == 1, no_traceback(result)
    assert "symbolic link" in result.stderr
    assert not elsewhere.exists()


def test_an_ownership_record_written_by_hand_stops_planning(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    owner = f"rec-{unique}"
    path = write(tmp_path, "m.yaml", f"version: 1\nowner: {owner}\nkv:\n  prefix: {owner}/\n  enforce: {{a: 1}}\n")
    assert run_process(consul.http_addr, "apply", str(path)).returncode == 0
    kv_put(consul, record_key(owner), b"edited by hand")
    count("ownership record overwritten by hand")
    for command in ("plan", "apply", "destroy"):
        args = [command, "--yes", str(path)] if command == "destroy" else [command, str(path)]
        result = run_process(consul.http_addr, *args)
        assert result.returncode == 1, no_traceback(result)
        assert record_key(owner) in result.stderr and "restore" in result.stderr


def test_run_stops_at_once_while_another_holds_the_owners_lock(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    owner = f"held-{unique}"
    status, _, session = call(consul, "PUT", "/v1/session/create", json.dumps({"TTL": "60s", "LockDelay": "0s"}))
    assert status == 200
    status, _, acquired = call(consul, "PUT", f"/v1/kv/{lock_key(owner)}?acquire={session['ID']}", b"someone")
    assert acquired is True
    path = write(
        tmp_path, "m.yaml", f"version: 1\nowner: {owner}\nservices: [{{name: {owner}, id: {owner}, port: 1}}]\n"
    )
    try:
        with RunProcess(consul.http_addr, ["--no-cache", "--lock-timeout", "60", str(path)], tmp_path) as run:
            time.sleep(2)  # run is now waiting for the lock (up to 60 s)
            count("SIGTERM while waiting for a lock")
            run.process.send_signal(signal.SIGTERM)
            code = run.process.wait(15)  # a hang guard well under a 30 s grace period, not a timing assertion
            assert code == 0, run.output()
            assert owner not in services(consul)
    finally:
        call(consul, "PUT", f"/v1/session/destroy/{session['ID']}")


@pytest.mark.parametrize("written", ["TOKEN\n", "TOKEN\r\n", "  TOKEN  "])
def test_a_token_written_with_a_newline_works(consul_acl: DevAgent, tmp_path: Path, written: str) -> None:
    from tests.conftest import ACL_TOKEN

    token_file = tmp_path / "token"
    token_file.write_text(written.replace("TOKEN", ACL_TOKEN))
    path = write(tmp_path, "m.yaml", "version: 1\nowner: tok\n")
    result = run_process(consul_acl.http_addr, "plan", str(path), env={"CONSUL_HTTP_TOKEN_FILE": str(token_file)})
    assert result.returncode == 0, no_traceback(result)


def test_a_token_that_cannot_be_a_header_is_exit_3_and_not_printed(consul: DevAgent, tmp_path: Path) -> None:
    path = write(tmp_path, "m.yaml", "version: 1\nowner: badtok\n")
    token = "secret-\u00e9-value"
    count("token that cannot be a header")
    result = run_process(consul.http_addr, "plan", str(path), env={"CONSUL_HTTP_TOKEN": token})
    assert result.returncode == 3, no_traceback(result)
    assert "CONSUL_HTTP_TOKEN" in result.stderr and token not in result.stderr


def test_the_token_is_not_passed_to_the_command(consul: DevAgent, tmp_path: Path) -> None:
    path = write(tmp_path, "m.yaml", "version: 1\ndependencies:\n  X: {kv: nope, fallback: x}\n")
    base = {k: v for k, v in os.environ.items() if not (k.startswith("CONSUL_") and k != "CONSUL_BIN")}
    env = {**base, "CONSUL_HTTP_ADDR": consul.http_addr, "CONSUL_HTTP_TOKEN": "anonymous-token"}
    script = 'printf %s "${CONSUL_HTTP_TOKEN-absent}"'
    for extra, seen in (([], "absent"), (["--pass-token"], "anonymous-token")):
        command = ["exec", "--no-cache", *extra, str(path), "--", "sh", "-c", script]
        done = subprocess.run(
            [sys.executable, "-m", "manifest_runner", *command],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        assert done.stdout == seen, done.stderr


def test_status_is_unhealthy_while_the_manifest_on_disk_is_invalid(
    consul: DevAgent, tmp_path: Path, unique: str
) -> None:
    import urllib.error
    import urllib.request

    owner = f"unhealthy-{unique}"
    path = write(tmp_path, "m.yaml", f"version: 1\nowner: {owner}\n")
    port = free_port()
    with RunProcess(consul.http_addr, ["--no-cache", "--listen", f"127.0.0.1:{port}", str(path)], tmp_path) as run:
        wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz").status == 200, what="healthy")
        path.write_text("version: 1\nowner: [broken\n")
        count("invalid manifest while running")

        def unhealthy() -> dict[str, object] | None:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz")
            except urllib.error.HTTPError as err:
                return json.loads(err.read()) if err.code == 503 else None
            return None

        detail = wait_for(unhealthy, what="503 while the manifest is invalid")
        assert "invalid manifest" in str(detail["last_error"])
        assert run.stop() == 0
