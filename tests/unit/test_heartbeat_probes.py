"""The probes behind TTL heartbeats, with Consul's conventions, against real local endpoints (no Consul needed)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from manifest_runner.run.probes import probe_command, probe_http, probe_tcp


@pytest.fixture
def endpoint() -> Iterator[tuple[str, list[int]]]:
    status = [200]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status[0])
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/ready", status
    server.shutdown()


@pytest.mark.parametrize(
    ("code", "expected"), [(200, "passing"), (204, "passing"), (429, "warning"), (500, "critical"), (404, "critical")]
)
def test_http_probe(endpoint: tuple[str, list[int]], code: int, expected: str) -> None:
    url, status = endpoint
    status[0] = code
    assert probe_http(url, 2.0)[0] == expected


def test_http_probe_without_an_answer_is_critical() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    result, output = probe_http(f"http://127.0.0.1:{port}/", 1.0)
    assert result == "critical"
    assert "refused" in output.lower()


def test_tcp_probe() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert probe_tcp(f"127.0.0.1:{port}", 1.0)[0] == "passing"
    assert probe_tcp(f"127.0.0.1:{port}", 1.0)[0] == "critical"


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["true"], "passing"),
        (["sh", "-c", "exit 1"], "warning"),
        (["sh", "-c", "exit 2"], "critical"),
        (["/nonexistent"], "critical"),
    ],
)
def test_command_probe(argv: list[str], expected: str) -> None:
    assert probe_command(argv, 5.0)[0] == expected


def test_command_probe_timeout() -> None:
    result, output = probe_command(["sleep", "5"], 0.2)
    assert result == "critical"
    assert "no result within" in output
