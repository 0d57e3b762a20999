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
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Protocol
from urllib.parse import quote, urlencode

from manifest_runner.config import Endpoint

USER_AGENT = "consul-manifest"


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP response: status, headers (case-insensitive), body bytes."""

    status: int
    headers: Message
    body: bytes
    reason: str = ""


class TransportError(Exception):
    """The request got no answer. ``kind`` is ``tls``, ``timeout`` or ``connect``; ``reason`` is for people."""

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
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
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
        twin = Transport(self.endpoint, server_name=self._server_name, timeout=self.timeout, max_idle=max_idle)
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
        with self._lock:
            if self._aborted:
                raise TransportError("connect", "the transport was closed")
            if self._idle:
                conn = self._idle.pop()
                conn.timeout = timeout
                if conn.sock is not None:
                    conn.sock.settimeout(timeout)
                self._active.add(conn)
                return conn, True
            conn = self._new(timeout)
            self._active.add(conn)
            return conn, False

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
    ) -> Answer:
        url = quote(path, safe="/:@")
        if params:
            url += "?" + urlencode([(k, str(v)) for k, v in params])
        data = body.encode("utf-8") if isinstance(body, str) else body
        all_headers = {"Host": self.host_header, "User-Agent": USER_AGENT, **(headers or {})}
        if data is not None or method in ("PUT", "POST"):
            all_headers["Content-Length"] = str(len(data or b""))
        limit = self.timeout if timeout is None else timeout
        for attempt in (1, 2):
            conn, reused = self._take(limit)
            try:
                conn.request(method, url, body=data, headers=all_headers)
                response = conn.getresponse()
                payload = response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as err:
                self._drop(conn)
                if reused and attempt == 1 and not self._aborted:
                    self.close()  # the agent closed its kept-alive connections (a restart?): all idle ones are stale
                    continue  # the request never reached it: send it again on a fresh connection
                raise TransportError("connect", _describe(err)) from None
            except ssl.SSLError as err:
                self._drop(conn)
                raise TransportError("tls", _describe(err)) from None
            except TimeoutError:
                self._drop(conn)
                raise TransportError("timeout", f"no answer within {limit:g}s") from None
            except (OSError, http.client.HTTPException) as err:
                self._drop(conn)
                raise TransportError(
                    "connect", "the transport was closed" if self._aborted else _describe(err)
                ) from None
            if response.will_close:
                self._drop(conn)
            else:
                self._give_back(conn)
            return Answer(response.status, response.headers, payload, response.reason)
        raise TransportError("connect", "connection lost")  # pragma: no cover - the loop always returns or raises

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
