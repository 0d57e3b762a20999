"""The local probes of a manifest's TTL heartbeats: http, tcp or a command.

Results follow Consul's own conventions: an HTTP probe passes on 2xx, warns on 429, fails otherwise (or when it
gets no answer within its timeout); a TCP probe passes when it connects; a command passes on exit 0, warns on
exit 1, fails otherwise. Each probe runs in its own :class:`~manifest_runner.consul.heartbeat.TtlHeartbeat`
loop, so that a slow probe never delays another.
"""

from __future__ import annotations

import functools
import http.client
import socket
import subprocess
from collections.abc import Callable
from urllib.parse import urlsplit

from manifest_runner.consul.client import ConsulClient
from manifest_runner.consul.heartbeat import TtlHeartbeat
from manifest_runner.converge.state import CheckSpec
from manifest_runner.manifest.checks import Heartbeat
from manifest_runner.util.durations import parse_duration


def probe_http(url: str, timeout: float) -> tuple[str, str]:
    parts = urlsplit(url)
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = connection_class(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
    try:
        conn.request(
            "GET",
            (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
            headers={"User-Agent": "consul-manifest heartbeat"},
        )
        response = conn.getresponse()
        body = response.read(512).decode("utf-8", "replace")
    except (OSError, http.client.HTTPException) as err:
        return "critical", f"GET {url}: {err}"
    finally:
        conn.close()
    status = "passing" if 200 <= response.status < 300 else "warning" if response.status == 429 else "critical"
    return status, f"GET {url}: HTTP {response.status} {response.reason}\n{body}"


def probe_tcp(address: str, timeout: float) -> tuple[str, str]:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return "passing", f"TCP connect {address}: success"
    except OSError as err:
        return "critical", f"TCP connect {address}: {err}"


def probe_command(argv: list[str], timeout: float) -> tuple[str, str]:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return "critical", f"{argv[0]}: no result within {timeout:g}s"
    except OSError as err:
        return "critical", f"{argv[0]}: {err}"
    output = (done.stdout + done.stderr)[-4000:]
    status = "passing" if done.returncode == 0 else "warning" if done.returncode == 1 else "critical"
    return status, f"{' '.join(argv)}: exit {done.returncode}\n{output}"


def run_probe(heartbeat: Heartbeat) -> tuple[str, str]:
    timeout = parse_duration(heartbeat.timeout)
    if heartbeat.http is not None:
        return probe_http(heartbeat.http, timeout)
    if heartbeat.tcp is not None:
        return probe_tcp(heartbeat.tcp, timeout)
    return probe_command(list(heartbeat.command or []), timeout)


def beats_for(
    client: ConsulClient,
    checks: list[CheckSpec],
    on_result: Callable[[str, str, str], None],
    on_missing: Callable[[str], None] | None = None,
) -> list[TtlHeartbeat]:
    """A heartbeat for every TTL check that declares a probe (every: default a third of the TTL)."""
    beats = []
    for check in checks:
        heartbeat = check.heartbeat
        if not isinstance(heartbeat, Heartbeat):
            continue
        ttl = parse_duration(str(check.fields().get("TTL", "30s")))
        every = parse_duration(heartbeat.every) if heartbeat.every else ttl / 3
        probe = functools.partial(run_probe, heartbeat)
        beats.append(TtlHeartbeat(client, check.check_id, every, probe, on_result, on_missing))
    return beats
