"""TTL checks kept alive from local probes: http, tcp or a command, their result reported to Consul.

Results follow Consul's own conventions: an HTTP probe passes on 2xx, warns on 429, fails otherwise (or when it
gets no answer within its timeout); a TCP probe passes when it connects; a command passes on exit 0, warns on
exit 1, fails otherwise. One thread per probe, so that a slow probe never delays another; each reports through
``PUT /v1/agent/check/update/<id>`` and keeps going when Consul is away (the next beat reports again).
"""

from __future__ import annotations

import http.client
import logging
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from manifest_runner.consul.client import ConsulClient
from manifest_runner.durations import parse_duration
from manifest_runner.errors import ConsulError
from manifest_runner.schema import Heartbeat
from manifest_runner.state import CheckSpec

log = logging.getLogger("consul_manifest.heartbeat")


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


@dataclass
class Beat:
    """One TTL check kept alive by one probe, in its own thread."""

    client: ConsulClient
    check_id: str
    heartbeat: Heartbeat
    every: float
    on_result: Callable[[str, str, str], None] = lambda check_id, status, output: None
    last_status: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Beat:
        self._thread = threading.Thread(target=self._run, name=f"heartbeat {self.check_id}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def beat_once(self) -> None:
        status, output = run_probe(self.heartbeat)
        try:
            self.client.update_ttl(self.check_id, status, output)
        except ConsulError as err:
            log.warning("heartbeat %s: could not report %s: %s", self.check_id, status, err)
            return
        if status != self.last_status:
            log.info("heartbeat %s: %s", self.check_id, status)
        self.last_status = status
        self.on_result(self.check_id, status, output)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.beat_once()
            if self._stop.wait(max(0.0, self.every - (time.monotonic() - started))):
                return


def beats_for(
    client: ConsulClient, checks: list[CheckSpec], on_result: Callable[[str, str, str], None] | None = None
) -> list[Beat]:
    """A Beat for every TTL check that declares a heartbeat (every: default a third of the TTL)."""
    beats = []
    for check in checks:
        heartbeat = check.heartbeat
        if not isinstance(heartbeat, Heartbeat):
            continue
        ttl = parse_duration(str(check.fields().get("TTL", "30s")))
        every = parse_duration(heartbeat.every) if heartbeat.every else ttl / 3
        beats.append(Beat(client, check.check_id, heartbeat, every, on_result or (lambda *_: None)))
    return beats
