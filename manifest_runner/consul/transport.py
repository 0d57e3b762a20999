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
import heapq
import http.client
import select
import socket
import ssl
import threading
import time
import zlib
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, urlencode

from manifest_runner.config import Endpoint

USER_AGENT = "consul-manifest"
MAX_BODY = 64 * 1024 * 1024
"""The largest answer read (after gzip is undone): far above what a datacenter's largest list takes, far below
what would exhaust memory."""


class _TooLarge(Exception):
    pass


def _dropped(conn: http.client.HTTPConnection) -> bool:
    """Whether an idle kept-alive connection was closed by the server: it is readable (EOF) though nothing was asked."""
    sock = conn.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class _Watchdog:
    """One thread that cuts the connection of any request that outlives its deadline, so that a server dripping
    one byte a second cannot hold a request past its timeout (a socket timeout bounds each read, not the whole)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, http.client.HTTPConnection]] = []
        self._armed: set[int] = set()
        self._fired: set[int] = set()
        self._seq = 0
        self._thread: threading.Thread | None = None

    def arm(self, deadline: float, conn: http.client.HTTPConnection) -> int:
        with self._cond:
            self._seq += 1
            heapq.heappush(self._heap, (deadline, self._seq, conn))
            self._armed.add(self._seq)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="request deadlines", daemon=True)
                self._thread.start()
            self._cond.notify()
            return self._seq

    def disarm(self, alarm: int) -> bool:
        """Stop watching; True when the deadline had passed and the connection was cut."""
        with self._cond:
            self._armed.discard(alarm)
            if alarm in self._fired:
                self._fired.discard(alarm)
                return True
            return False

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._heap and self._heap[0][1] not in self._armed:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                deadline, alarm, conn = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                heapq.heappop(self._heap)
                self._armed.discard(alarm)
                self._fired.add(alarm)
            sock = conn.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


_WATCHDOG = _Watchdog()


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP response: status, headers (case-insensitive), body bytes."""

    status: int
    headers: Message
    body: bytes
    reason: str = ""


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


def tls_context(verify: bool | str, cert: tuple[str, str] | str | None) -> ssl.SSLContext:
    """A client TLS context: the system's CAs, or a CA file or folder; optionally a client certificate."""
    if verify is False:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif isinstance(verify, str):
        location = Path(verify)
        context = ssl.create_default_context(
            cafile=verify if not location.is_dir() else None, capath=verify if location.is_dir() else None
        )
    else:
        context = ssl.create_default_context()
    if cert is not None:
        certfile, keyfile = cert if isinstance(cert, tuple) else (cert, None)
        context.load_cert_chain(certfile, keyfile)
    return context


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, socket_path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._socket_path = socket_path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self._socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class _TLSConnection(http.client.HTTPSConnection):
    """HTTPS whose certificate is checked against ``server_name`` (CONSUL_TLS_SERVER_NAME) instead of the host."""

    def __init__(self, host: str, port: int, timeout: float, context: ssl.SSLContext, server_name: str) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._server_name = server_name
        self._tls = context

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._tls.wrap_socket(self.sock, server_hostname=self._server_name)


class Transport:
    """Requests to one agent. Thread-safe: idle keep-alive connections are shared through a small pool."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        verify: bool | str = True,
        cert: tuple[str, str] | str | None = None,
        server_name: str | None = None,
        timeout: float = 5.0,
        max_idle: int = 8,
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
        self._max_idle = max_idle
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
            return _UnixConnection(endpoint.socket_path, timeout)
        if self._context is not None:
            if self._server_name:
                return _TLSConnection(endpoint.host, endpoint.port, timeout, self._context, self._server_name)
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
                    if _dropped(conn):  # the server closed it while it was idle (a restart, an idle timeout)
                        stale.append(conn)
                        continue
                    conn.timeout = timeout
                    if conn.sock is not None:
                        conn.sock.settimeout(timeout)
                    self._active.add(conn)
                    return conn, True
                conn = self._new(timeout)
                self._active.add(conn)
                return conn, False
        finally:
            for old in stale:
                old.close()

    def _give_back(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._active.discard(conn)
            if len(self._idle) < self._max_idle and not self._aborted:
                self._idle.append(conn)
                return
        conn.close()

    def _drop(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            self._active.discard(conn)
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
            alarm = _WATCHDOG.arm(deadline, conn)
            try:
                conn.request(method, url, body=data, headers=all_headers)
                response = conn.getresponse()
                payload = self._read(response)
            except (OSError, http.client.HTTPException, _TooLarge) as err:
                fired = _WATCHDOG.disarm(alarm)
                self._drop(conn)
                broken = isinstance(err, http.client.RemoteDisconnected | BrokenPipeError | ConnectionResetError)
                if broken and not fired and reused and attempt == 1 and replay and not self._aborted:
                    self.close()  # the agent closed its kept-alive connections (a restart?): all idle ones are stale
                    continue  # safe to send again: asking twice changes nothing
                raise self._failure(err, fired=fired, limit=limit) from None
            if _WATCHDOG.disarm(alarm):
                self._drop(conn)
                raise TransportError("timeout", f"no complete answer within {limit:g}s")
            if response.will_close:
                self._drop(conn)
            else:
                self._give_back(conn)
            return Answer(response.status, response.headers, payload, response.reason)
        raise TransportError("connect", "connection lost")  # pragma: no cover - the loop always returns or raises

    def _failure(self, err: BaseException, *, fired: bool, limit: float) -> TransportError:
        if fired:
            return TransportError("timeout", f"no complete answer within {limit:g}s")
        if isinstance(err, _TooLarge):
            return TransportError("too_large", str(err))
        if isinstance(err, ssl.SSLError):
            return TransportError("tls", _describe(err))
        if isinstance(err, TimeoutError):
            return TransportError("timeout", f"no answer within {limit:g}s")
        return TransportError("connect", "the transport was closed" if self._aborted else _describe(err))

    def _read(self, response: http.client.HTTPResponse) -> bytes:
        """The body, at most ``max_body`` bytes (after gzip is undone), or _TooLarge."""
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
            return plain
        return payload

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
        for conn in connections:
            sock = conn.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            conn.close()


def _describe(err: BaseException) -> str:
    """A reason a person can act on, with a hint for the TLS cases."""
    if isinstance(err, ssl.SSLCertVerificationError):
        detail = err.verify_message or str(err)
        if "hostname" in detail.lower() or "IP address mismatch" in detail:
            return f"the certificate does not name this server ({detail}); see CONSUL_TLS_SERVER_NAME"
        return f"certificate verify failed: {detail}; see CONSUL_CACERT / CONSUL_CAPATH"
    if isinstance(err, ssl.SSLError):
        alerts = ("BAD_CERTIFICATE", "CERTIFICATE_REQUIRED", "UNKNOWN_CA", "HANDSHAKE_FAILURE")
        text = err.reason or str(err)
        if any(alert in str(err.reason or "") for alert in alerts):
            return (
                f"{text.lower().replace('_', ' ')}; the server wants a client certificate it trusts "
                "(CONSUL_CLIENT_CERT, CONSUL_CLIENT_KEY)"
            )
        return text
    if isinstance(err, ConnectionRefusedError):
        return "Connection refused"
    if isinstance(err, FileNotFoundError):
        return f"no such socket ({err.filename})" if err.filename else "no such socket"
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    return type(err).__name__
