"""Connections under the transport: TLS (server name, client certificates) and unix sockets, a check that a
kept-alive connection is still open, the watchdog that enforces a request's deadline, and errors in words."""

from __future__ import annotations

import contextlib
import heapq
import http.client
import select
import socket
import ssl
import threading
import time
from pathlib import Path


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


class UnixConnection(http.client.HTTPConnection):
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


class TLSConnection(http.client.HTTPSConnection):
    """HTTPS whose certificate is checked against ``server_name`` (CONSUL_TLS_SERVER_NAME) instead of the host."""

    def __init__(self, host: str, port: int, timeout: float, context: ssl.SSLContext, server_name: str) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._server_name = server_name
        self._tls = context

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._tls.wrap_socket(self.sock, server_hostname=self._server_name)


def dropped(conn: http.client.HTTPConnection) -> bool:
    """Whether an idle kept-alive connection was closed by the server: it is readable (EOF) though nothing was asked."""
    sock = conn.sock
    if sock is None:
        return True
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


class Watchdog:
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


WATCHDOG = Watchdog()


def describe(err: BaseException) -> str:
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
