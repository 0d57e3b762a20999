"""A throw-away ``consul agent -dev`` on loopback with free ports: for tests, benchmarks and trying the tool out.

DNS and gRPC are off, the UI is off, every port is picked free, and stopping is certain (SIGTERM, then SIGKILL).
Readiness means: a leader is elected, the agent's own node is in the catalog (so service registrations are accepted)
and, with ACLs on, the management token works. Uses only the standard library so that it costs nothing to import.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

BINARY_ENV = "CONSUL_BIN"


class AgentError(RuntimeError):
    """The dev agent could not be found, started or made ready."""


def find_consul_binary(environ: dict[str, str] | None = None) -> str | None:
    """``$CONSUL_BIN`` if set, else ``consul`` on PATH; ``None`` when there is neither."""
    env = os.environ if environ is None else environ
    explicit = env.get(BINARY_ENV)
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    return shutil.which("consul")


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 right now (serf uses both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise AgentError("no free port found on 127.0.0.1")


@dataclass(frozen=True, slots=True)
class AgentPorts:
    http: int
    serf_lan: int
    serf_wan: int
    server: int

    @classmethod
    def pick(cls) -> AgentPorts:
        ports: set[int] = set()
        while len(ports) < 4:
            ports.add(free_port())
        http, lan, wan, server = sorted(ports)
        return cls(http, lan, wan, server)


@dataclass
class DevAgent:
    """One ``consul agent -dev`` process. Use as a context manager, or call :meth:`start` and :meth:`stop`."""

    binary: str
    datacenter: str = "dc1"
    node_name: str = field(default_factory=lambda: f"node-{uuid.uuid4().hex[:8]}")
    management_token: str | None = None
    """With a token, ACLs are on with ``default_policy = "deny"`` and this token is the management token."""
    extra_hcl: tuple[str, ...] = ()
    ports: AgentPorts = field(default_factory=AgentPorts.pick)
    log_path: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _log_handle: Any = field(default=None, init=False, repr=False)

    @property
    def http_addr(self) -> str:
        return f"127.0.0.1:{self.ports.http}"

    @property
    def url(self) -> str:
        return f"http://{self.http_addr}"

    def command(self) -> list[str]:
        ports = self.ports
        args = [
            self.binary,
            "agent",
            "-dev",
            "-bind=127.0.0.1",
            "-client=127.0.0.1",
            "-advertise=127.0.0.1",
            "-advertise-wan=127.0.0.1",
            f"-node={self.node_name}",
            f"-datacenter={self.datacenter}",
            f"-http-port={ports.http}",
            "-dns-port=-1",
            "-grpc-port=-1",
            f"-serf-lan-port={ports.serf_lan}",
            f"-serf-wan-port={ports.serf_wan}",
            f"-server-port={ports.server}",
            "-ui=false",
            "-disable-host-node-id=true",
            "-log-level=warn",
        ]
        hcl = list(self.extra_hcl)
        if self.management_token is not None:
            hcl.append(
                'acl { enabled = true, default_policy = "deny", enable_token_persistence = false, '
                f'tokens {{ master = "{self.management_token}", agent = "{self.management_token}" }} }}'
            )
        for block in hcl:
            args.append(f"-hcl={block}")
        return args

    def start(self, timeout: float = 30.0) -> DevAgent:
        if self.process is not None and self.process.poll() is None:
            return self
        if self.log_path is None:
            handle, name = tempfile.mkstemp(prefix=f"consul-{self.node_name}-", suffix=".log")
            os.close(handle)
            self.log_path = Path(name)
        self._log_handle = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command(),
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _request(self, method: str, path: str, timeout: float = 2.0) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", self.ports.http, timeout=timeout)
        try:
            headers = {"X-Consul-Token": self.management_token} if self.management_token else {}
            conn.request(method, path, headers=headers)
            response = conn.getresponse()
            body = response.read()
            try:
                return response.status, json.loads(body) if body else None
            except ValueError:
                return response.status, body.decode("utf-8", "replace")
        finally:
            conn.close()

    def api(self, method: str, path: str) -> Any:
        """A management-token request to the agent's HTTP API, for fixtures and tests (not for the tool)."""
        status, body = self._request(method, path, timeout=10.0)
        if status != 200:
            raise AgentError(f"{method} {path}: HTTP {status}: {body}")
        return body

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last = "not started"
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise AgentError(f"consul exited with {self.process.returncode}: {self.log_tail()}")
            try:
                status, leader = self._request("GET", "/v1/status/leader")
                if status == 200 and leader:
                    status, node = self._request("GET", f"/v1/catalog/node/{self.node_name}")
                    if status == 200 and node:
                        return
                    last = f"node not in the catalog yet (HTTP {status})"
                else:
                    last = "no leader yet"
            except OSError as err:
                last = str(err)
            time.sleep(0.05)
        raise AgentError(f"consul agent not ready within {timeout}s ({last}): {self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout)
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def kill(self) -> None:
        """SIGKILL, as a crash would: a dev agent forgets everything."""
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)
        self.stop()

    def restart(self, timeout: float = 30.0) -> None:
        """Kill and start again on the same ports, empty (dev mode keeps nothing)."""
        self.kill()
        self.start(timeout)

    def join_wan(self, other: DevAgent, timeout: float = 30.0) -> None:
        """Join ``other`` over the WAN and wait until each sees the other's datacenter."""
        self.api("PUT", f"/v1/agent/join/127.0.0.1:{other.ports.serf_wan}?wan=1")
        deadline = time.monotonic() + timeout
        want = {self.datacenter, other.datacenter}
        while time.monotonic() < deadline:
            mine = set(self.api("GET", "/v1/catalog/datacenters"))
            theirs = set(other.api("GET", "/v1/catalog/datacenters"))
            if want <= mine and want <= theirs:
                return
            time.sleep(0.1)
        raise AgentError(f"WAN join of {self.datacenter} and {other.datacenter} did not complete in {timeout}s")

    def __enter__(self) -> DevAgent:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
