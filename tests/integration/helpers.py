"""Helpers for tests against a real agent: write manifests, run the CLI, read Consul with plain HTTP.

Consul is read here with the standard library, not with the project's own client, so that a bug in the adapter
cannot hide itself.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
from http.client import HTTPConnection
from pathlib import Path
from typing import Any
from urllib.parse import quote

from click.testing import CliRunner, Result

from manifest_runner.cli import cli
from manifest_runner.testing.devagent import DevAgent


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def run_cli(agent: DevAgent, *args: str, token: str | None = None, extra_env: dict[str, str] | None = None) -> Result:
    """The CLI in-process (fast), against ``agent``, with no other CONSUL_* variable leaking in."""
    env = {name: None for name in os.environ if name.startswith("CONSUL_") and name != "CONSUL_BIN"}
    env.update({"CONSUL_HTTP_ADDR": agent.http_addr, **({"CONSUL_HTTP_TOKEN": token} if token else {})})
    env.update(extra_env or {})
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def run_process(agent_addr: str, *args: str, env: dict[str, str] | None = None, timeout: float = 60):
    """The CLI as a separate process, the way a pipeline runs it."""
    base = {k: v for k, v in os.environ.items() if not (k.startswith("CONSUL_") and k != "CONSUL_BIN")}
    return subprocess.run(
        [sys.executable, "-m", "manifest_runner", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**base, "CONSUL_HTTP_ADDR": agent_addr, **(env or {})},
    )


def call(
    agent: DevAgent, method: str, path: str, body: bytes | str | None = None, token: str | None = None
) -> tuple[int, dict[str, str], Any]:
    conn = HTTPConnection("127.0.0.1", agent.ports.http, timeout=10)
    headers = {"X-Consul-Token": token or agent.management_token} if (token or agent.management_token) else {}
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    data = response.read()
    conn.close()
    parsed: Any = None
    if data:
        try:
            parsed = json.loads(data)
        except ValueError:
            parsed = data.decode()
    return response.status, dict(response.getheaders()), parsed


def kv_entry(agent: DevAgent, key: str) -> dict[str, Any] | None:
    status, _, body = call(agent, "GET", f"/v1/kv/{quote(key)}")
    if status == 404:
        return None
    entry = dict(body[0])
    entry["Value"] = base64.b64decode(entry["Value"]) if entry.get("Value") else b""
    return entry


def kv_value(agent: DevAgent, key: str) -> bytes | None:
    entry = kv_entry(agent, key)
    return None if entry is None else entry["Value"]


def kv_put(agent: DevAgent, key: str, value: bytes | str, flags: int = 0) -> None:
    status, _, body = call(agent, "PUT", f"/v1/kv/{quote(key)}?flags={flags}", body=value)
    assert status == 200 and body is True, (status, body)


def kv_delete(agent: DevAgent, key: str) -> None:
    call(agent, "DELETE", f"/v1/kv/{quote(key)}")


def services(agent: DevAgent) -> dict[str, dict[str, Any]]:
    status, _, body = call(agent, "GET", "/v1/agent/services")
    assert status == 200
    return dict(body)


def checks(agent: DevAgent) -> dict[str, dict[str, Any]]:
    status, _, body = call(agent, "GET", "/v1/agent/checks")
    assert status == 200
    return dict(body)


def register(agent: DevAgent, payload: dict[str, Any]) -> None:
    status, _, body = call(agent, "PUT", "/v1/agent/service/register", body=json.dumps(payload))
    assert status == 200, body


def deregister(agent: DevAgent, service_id: str) -> None:
    call(agent, "PUT", f"/v1/agent/service/deregister/{service_id}")


def indexes(agent: DevAgent) -> tuple[int, int]:
    """(KV index, catalog services index): they move on any write to the KV store or the catalog."""
    _, kv_headers, _ = call(agent, "GET", "/v1/kv/?keys")
    _, catalog_headers, _ = call(agent, "GET", "/v1/catalog/services")
    return int(kv_headers["X-Consul-Index"]), int(catalog_headers["X-Consul-Index"])
