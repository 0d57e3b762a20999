"""HTTP to the Consul agent on the standard library: TCP, TLS (CA file or folder, client certificate, server name)
and unix sockets, keep-alive connections shared between threads, a timeout on every request.

Why not ``requests``: it costs ~150 ms to import, which is most of what ``consul-manifest render`` may spend at a
container's boot, and Consul's API needs none of what it adds (no redirects, no cookies, no proxies: like Consul's Go
client for a loopback agent, and unlike ``requests``, nothing from the environment is picked up but the CONSUL_*
contract). Errors are mapped to the project's exception tree by :mod:`manifest_runner.consul.client`; this module
raises only :class:`TransportError`.

:class:`HttpTransport` is the seam between the client and the network: tests of the client's own logic (batching,
retries, blocking-query loops) put a scripted transport there; tests of Consul's behaviour use a real agent.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
import time
import zlib
from dataclasses import dataclass
from email.message import Message
from typing import Protocol
from urllib.parse import quote, urlencode

from manifest_runner.config import Endpoint
from manifest_runner.consul.sockets import (
    WATCHDOG,
    TLSConnection,
    UnixConnection,
    describe,
    dropped,
    tls_context,
)

USER_AGENT = "consul-manifest"
MAX_BODY = 64 * 1024 * 1024
"""The largest answer read (after gzip is undone): far above what a datacenter's largest list takes, far below
what would exhaust memory."""


class _TooLarge(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP response: status, headers (case-insensitive), body bytes."""

    status: int
    headers: Message
    body: bytes
    reason: str = ""
    wire: int = 0
    """Bytes received for it: the status line, the headers and the body as sent (compressed or not)."""


class TransportError(Exception):
    """The request got no usable answer. ``kind`` is ``tls``, ``timeout``, ``too_large`` or ``connect``; ``reason``
    is for people."""

    def __init__(self, kind: str, reason: str) -> None:
        self.kind = kind
        self.reason = reason
        super().__init__(reason)


class HttpTransport(Protocol):
    """What the client needs from a transport."""

    def request(
        self,
        method: str,
        path: str,
        params: list[tuple[str, object]] | None = None,
        body: bytes | str | None = None,
        *,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        idempotent: bool | None = None,
    ) -> Answer: ...

    def twin(self, *, max_idle: int = 1) -> HttpTransport:
        """A transport to the same place with connections of its own."""
        ...

    def close(self) -> None: ...

    def abort(self) -> None: ...


class Transport:
    """Requests to one agent. Thread-safe: keep-alive connections are shared through a small pool, and at most
    ``max_open`` are open at once (a request waits for one to be free, within its timeout): Consul refuses a client
    more than ``limits.http_max_conns_per_client`` connections, counted per client address."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        verify: bool | str = True,
        cert: tuple[str, str] | str | None = None,
        server_name: str | None = None,
        timeout: float = 5.0,
        max_idle: int = 8,
        max_open: int | None = None,
        max_body: int = MAX_BODY,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.max_body = max_body
        self._server_name = server_name
        self._verify = verify
        self._cert = cert
        self._context = tls_context(verify, cert) if endpoint.scheme == "https" else None
        self._idle: list[http.client.HTTPConnection] = []
        self._active: set[http.client.HTTPConnection] = set()
        self._aborted = False
        self._lock = threading.Lock()
        self._freed = threading.Condition(self._lock)
        self._max_idle = max_idle
        self._max_open = max(1, max_open if max_open is not None else max_idle)
        self.host_header = "localhost" if endpoint.scheme == "unix" else f"{endpoint.host}:{endpoint.port}"

    def twin(self, *, max_idle: int = 1) -> Transport:
        twin = Transport(
            self.endpoint,
            server_name=self._server_name,
            timeout=self.timeout,
            max_idle=max_idle,
            max_body=self.max_body,
        )
        twin._context = self._context  # the same TLS set-up, without reading the files again
        return twin

    def _new(self, timeout: float) -> http.client.HTTPConnection:
        endpoint = self.endpoint
        if endpoint.socket_path is not None:
            return UnixConnection(endpoint.socket_path, timeout)
        if self._context is not None:
            if self._server_name:
                return TLSConnection(endpoint.host, endpoint.port, timeout, self._context, self._server_name)
            return http.client.HTTPSConnection(endpoint.host, endpoint.port, timeout=timeout, context=self._context)
        return http.client.HTTPConnection(endpoint.host, endpoint.port, timeout=timeout)

    def _take(self, timeout: float) -> tuple[http.client.HTTPConnection, bool]:
        stale: list[http.client.HTTPConnection] = []
        try:
            with self._lock:
                if self._aborted:
                    raise TransportError("connect", "the transport was closed")
                while self._idle:
                    conn = self._idle.pop()
                    if dropped(conn):  # the server closed it while it was idle (a restart, an idle timeout)
                        stale.append(conn)
                        continue
                    conn.timeout = timeout
                    if conn.sock is not None:
                        conn.sock.settimeout(timeout)
                    self._active.add(conn)
                    return conn, True
                if len(self._active) >= self._max_open:
                    # every connection is busy: wait for one (the wait counts against this request's timeout)
                    if not self._freed.wait_for(
                        lambda: self._aborted or self._idle or len(self._active) < self._max_open, timeout
                    ):
                        raise TransportError("timeout", f"no free connection within {timeout:g}s")
                    if self._aborted:
                        raise TransportError("connect", "the transport was closed")
                    if self._idle:
                        conn = self._idle.pop()
                        if not dropped(conn):
                            conn.timeout = timeout
                            if conn.sock is not None:
                                conn.sock.settimeout(timeout)
                            self._active.add(conn)
                            return conn, True
                        stale.append(conn)
                conn = self._new(timeout)
                self._active.add(conn)
                return conn, False
        finally:
            for old in stale:
                old.close()

    def _give_back(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._active.discard(conn)
            self._freed.notify()
            if len(self._idle) < self._max_idle and not self._aborted:
                self._idle.append(conn)
                return
        conn.close()

    def _drop(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._active.discard(conn)
            self._freed.notify()
        conn.close()

    def request(
        self,
        method: str,
        path: str,
        params: list[tuple[str, object]] | None = None,
        body: bytes | str | None = None,
        *,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        idempotent: bool | None = None,
    ) -> Answer:
        """One request, answered within ``timeout`` seconds in all (connect, send, every read), or TransportError.

        A kept-alive connection the server closed while it was idle is noticed before use; one that breaks as the
        request goes out is replaced and the request sent again only when it is ``idempotent`` (by default GET and
        HEAD): a write that may have landed is never sent twice."""
        url = quote(path, safe="/:@")
        if params:
            url += "?" + urlencode([(k, str(v)) for k, v in params])
        data = body.encode("utf-8") if isinstance(body, str) else body
        all_headers = {"Host": self.host_header, "User-Agent": USER_AGENT, "Accept-Encoding": "gzip", **(headers or {})}
        if data is not None or method in ("PUT", "POST"):
            all_headers["Content-Length"] = str(len(data or b""))
        limit = self.timeout if timeout is None else timeout
        replay = method in ("GET", "HEAD") if idempotent is None else idempotent
        deadline = time.monotonic() + limit
        for attempt in (1, 2):
            conn, reused = self._take(max(0.001, deadline - time.monotonic()))
            alarm = WATCHDOG.arm(deadline, conn)
            try:
                conn.request(method, url, body=data, headers=all_headers)
                response = conn.getresponse()
                payload, raw = self._read(response)
            except (OSError, http.client.HTTPException, _TooLarge) as err:
                fired = WATCHDOG.disarm(alarm)
                self._drop(conn)
                broken = isinstance(err, http.client.RemoteDisconnected | BrokenPipeError | ConnectionResetError)
                if broken and not fired and reused and attempt == 1 and replay and not self._aborted:
                    self.close()  # the agent closed its kept-alive connections (a restart?): all idle ones are stale
                    continue  # safe to send again: asking twice changes nothing
                raise self._failure(err, fired=fired, limit=limit) from None
            if WATCHDOG.disarm(alarm):
                self._drop(conn)
                raise TransportError("timeout", f"no complete answer within {limit:g}s")
            if response.will_close:
                self._drop(conn)
            else:
                self._give_back(conn)
            head = 17 + len(response.reason) + sum(len(k) + len(v) + 4 for k, v in response.headers.items())
            return Answer(response.status, response.headers, payload, response.reason, head + raw)
        raise TransportError("connect", "connection lost")  # pragma: no cover - the loop always returns or raises

    def _failure(self, err: BaseException, *, fired: bool, limit: float) -> TransportError:
        if fired:
            return TransportError("timeout", f"no complete answer within {limit:g}s")
        if isinstance(err, _TooLarge):
            return TransportError("too_large", str(err))
        if isinstance(err, ssl.SSLError):
            return TransportError("tls", describe(err))
        if isinstance(err, TimeoutError):
            return TransportError("timeout", f"no answer within {limit:g}s")
        return TransportError("connect", "the transport was closed" if self._aborted else describe(err))

    def _read(self, response: http.client.HTTPResponse) -> tuple[bytes, int]:
        """The body, at most ``max_body`` bytes (after gzip is undone), and its size as sent; or _TooLarge."""
        declared = response.getheader("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            raise _TooLarge(f"the answer is {int(declared):,} bytes; at most {self.max_body:,} are read")
        payload = response.read(self.max_body + 1)
        if len(payload) > self.max_body:
            raise _TooLarge(f"the answer is over {self.max_body:,} bytes")
        if (response.getheader("Content-Encoding") or "").lower() == "gzip":
            inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                plain = inflate.decompress(payload, self.max_body + 1)
            except zlib.error as err:
                raise http.client.HTTPException(f"a gzip body that cannot be read: {err}") from None
            if len(plain) > self.max_body or inflate.unconsumed_tail:
                raise _TooLarge(f"the answer unpacks to over {self.max_body:,} bytes")
            return plain, len(payload)
        return payload, len(payload)

    def close(self) -> None:
        """Close the idle connections (requests in flight finish normally)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def abort(self) -> None:
        """Close every connection now, interrupting requests in flight (a blocking query waiting minutes, say):
        they fail with TransportError, and so does any later request. Used to stop a watch at once."""
        with self._lock:
            self._aborted = True
            connections = [*self._idle, *self._active]
            self._idle = []
            self._freed.notify_all()
        for conn in connections:
            sock = conn.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            conn.close()
