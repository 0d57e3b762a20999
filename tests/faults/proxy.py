"""A loopback HTTP proxy in front of a real Consul agent that misbehaves on the requests a test chooses.

Every request it does not touch goes to the real agent and its real answer comes back, so a test sees Consul's own
behaviour everywhere except where a fault is injected. Faults (``Fault.kind``):

- ``delay``: wait ``seconds`` before forwarding;
- ``drop``: close the connection without answering;
- ``reset``: close it with a TCP reset;
- ``truncate``: forward the request, send back only the first half of the answer, close;
- ``blackhole``: accept and never answer (until the client gives up);
- ``drip``: answer one byte every ``seconds`` (a slow-loris server);
- ``empty200``: answer 200 with an empty body;
- ``nonjson200``: answer 200 with an HTML page;
- ``error500``: answer 500;
- ``redirect``: answer 301 to another path.

Each injected fault is counted in :data:`INJECTED` and appended to ``$CONSUL_MANIFEST_FAULTS_LOG`` (the fault suite
prints the totals at the end of the run).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

INJECTED: Counter[str] = Counter()
_log_lock = threading.Lock()


def count(kind: str, amount: int = 1) -> None:
    """Record ``amount`` injected faults of ``kind`` (also for faults injected outside the proxy: kill -9...)."""
    INJECTED[kind] += amount
    path = os.environ.get("CONSUL_MANIFEST_FAULTS_LOG")
    if path:
        with _log_lock, open(path, "a", encoding="utf-8") as log:  # noqa: PTH123 - a plain append
            log.write(f"{kind} {amount}\n")


@dataclass
class Fault:
    kind: str
    method: str | None = None
    """Only requests with this method (None: any)."""
    path: str | None = None
    """Only requests whose path starts with this (None: any)."""
    body: bytes | None = None
    """Only requests whose body holds this (None: any), e.g. ``b'"cas"'`` for a transaction that writes."""
    seconds: float = 1.0
    times: int | None = None
    """Inject at most this many times (None: every matching request)."""
    hits: int = 0

    def matches(self, method: str, path: str, body: bytes = b"") -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        return (
            (self.method is None or self.method == method)
            and (self.path is None or path.startswith(self.path))
            and (self.body is None or self.body in body)
        )


@dataclass
class FaultProxy:
    agent_port: int
    faults: list[Fault] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def inject(self, kind: str, **where: object) -> Fault:
        fault = Fault(kind, **where)  # type: ignore[arg-type]
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults.clear()

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError, http.client.HTTPException):  # the agent went away: drop the client
            reader = conn.makefile("rb")
            while not self._stop.is_set():
                request = _read_request(reader)
                if request is None:
                    return
                method, target, headers, body = request
                path = target.split("?", 1)[0]
                with self._lock:
                    self.requests.append((method, path))
                    fault = next((f for f in self.faults if f.matches(method, path, body)), None)
                    if fault is not None:
                        fault.hits += 1
                if fault is not None:
                    count(fault.kind)
                    if not self._misbehave(fault, conn, method, target, headers, body):
                        return
                    continue
                status, reason, answer_headers, answer = self._forward(method, target, headers, body)
                conn.sendall(_response(status, reason, answer_headers, answer))

    def _forward(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        upstream = http.client.HTTPConnection("127.0.0.1", self.agent_port, timeout=700)
        try:
            wanted = {k: v for k, v in headers.items() if k.lower() not in ("host", "connection", "accept-encoding")}
            upstream.request(method, target, body=body or None, headers=wanted)
            response = upstream.getresponse()
            data = response.read()
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in ("connection", "transfer-encoding")]
            return response.status, response.reason, kept, data
        finally:
            upstream.close()

    def _misbehave(
        self, fault: Fault, conn: socket.socket, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> bool:
        """Answer badly; True when the connection stays usable for another request."""
        kind = fault.kind
        if kind == "delay":
            time.sleep(fault.seconds)
            status, reason, answer_headers, answer = self._forward(method, target, headers, body)
            conn.sendall(_response(status, reason, answer_headers, answer))
            return True
        if kind == "drop":
            return False
        if kind == "reset":
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False
        if kind == "blackhole":
            self._stop.wait(fault.seconds if fault.seconds > 1 else 600)
            return False
        if kind == "truncate":
            status, reason, answer_headers, answer = self._forward(method, target, headers, body)
            whole = _response(status, reason, answer_headers, answer)
            conn.sendall(whole[: max(1, len(whole) - max(1, len(answer) // 2))])
            return False
        if kind == "drip":
            whole = _response(200, "OK", [("Content-Type", "application/json"), ("X-Consul-Index", "1")], b"[]" * 64)
            for byte in whole:
                if self._stop.wait(fault.seconds):
                    return False
                try:
                    conn.sendall(bytes([byte]))
                except OSError:
                    return False
            return False
        canned = {
            "empty200": (200, "OK", [("X-Consul-Index", "7")], b""),
            "nonjson200": (200, "OK", [("Content-Type", "text/html"), ("X-Consul-Index", "7")], b"<html>login</html>"),
            "error500": (500, "Internal Server Error", [], b"rpc error: something broke"),
            "redirect": (301, "Moved Permanently", [("Location", "/v1/elsewhere")], b"<a href='/v1/elsewhere'>"),
        }
        status, reason, answer_headers, answer = canned[kind]
        conn.sendall(_response(status, reason, answer_headers, answer))
        return True


def _read_request(reader: object) -> tuple[str, str, dict[str, str], bytes] | None:
    read_line: Callable[[], bytes] = reader.readline  # type: ignore[attr-defined]
    try:
        line = read_line()
        if not line:
            return None
        method, target, _ = line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while True:
            header = read_line()
            if header in (b"\r\n", b"\n", b""):
                break
            name, _, value = header.decode("latin-1").partition(":")
            headers[name.strip()] = value.strip()
        length = int(headers.get("Content-Length", "0") or 0)
        body = reader.read(length) if length else b""  # type: ignore[attr-defined]
    except (OSError, ValueError):
        return None
    return method, target, headers, body


def _response(status: int, reason: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{k}: {v}" for k, v in headers if k.lower() != "content-length"]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@contextlib.contextmanager
def fault_proxy(agent_port: int) -> Iterator[FaultProxy]:
    proxy = FaultProxy(agent_port)
    try:
        yield proxy
    finally:
        proxy.close()
