"""The transport's connection rules against a tiny loopback HTTP server (not Consul: this tests our sockets).

A kept-alive connection that the server closed while idle (an agent restart does this) is detected on reuse, and the
request, which never reached the server, is sent again once on a fresh connection; a fresh connection that fails is
an error at once.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from manifest_runner.config import Endpoint
from manifest_runner.consul.transport import Transport, TransportError


class OneShotServer:
    """Answers each connection's first request with keep-alive, then closes the connection."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.requests: list[bytes] = []
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                data += chunk
            self.requests.append(data.split(b"\r\n", 1)[0])
            body = b'"leader"'
            conn.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Consul-Index: 1\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            conn.close()  # the client believes the connection is kept alive; it is not

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def server() -> Iterator[OneShotServer]:
    running = OneShotServer()
    yield running
    running.close()


def test_a_stale_kept_alive_connection_is_replaced_and_the_request_sent_once_more(server: OneShotServer) -> None:
    transport = Transport(Endpoint("http", "127.0.0.1", server.port), timeout=5)
    assert transport.request("GET", "/v1/status/leader").body == b'"leader"'
    assert transport.request("GET", "/v1/status/leader").body == b'"leader"'
    assert server.connections == 2
    assert server.requests == [b"GET /v1/status/leader HTTP/1.1"] * 2


def test_a_refused_fresh_connection_is_an_error_at_once() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    transport = Transport(Endpoint("http", "127.0.0.1", port), timeout=2)
    with pytest.raises(TransportError) as caught:
        transport.request("GET", "/v1/status/leader")
    assert caught.value.kind == "connect"
