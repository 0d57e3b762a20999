"""A byte-counting TCP relay for benchmarks: put it between a process and the agent, read what crossed.

Counts bytes each way, HTTP requests (request lines seen going up), connections open now and at most. It relays
bytes as they are; it never parses more than the request lines."""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field


@dataclass
class Meter:
    agent_port: int
    up: int = 0
    down: int = 0
    requests: int = 0
    open_now: int = 0
    open_peak: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def snapshot(self) -> tuple[int, int, int]:
        """(bytes up, bytes down, requests) so far."""
        with self._lock:
            return self.up, self.down, self.requests

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            try:
                agent = socket.create_connection(("127.0.0.1", self.agent_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self.open_now += 1
                self.open_peak = max(self.open_peak, self.open_now)
            done = threading.Event()
            threading.Thread(target=self._pipe, args=(client, agent, True, done), daemon=True).start()
            threading.Thread(target=self._pipe, args=(agent, client, False, done), daemon=True).start()

    def _pipe(self, source: socket.socket, target: socket.socket, upward: bool, done: threading.Event) -> None:
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                with self._lock:
                    if upward:
                        self.up += len(data)
                        self.requests += data.count(b" HTTP/1.1\r\n")
                    else:
                        self.down += len(data)
                target.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, target):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
            if not done.is_set():
                done.set()
                with self._lock:
                    self.open_now -= 1
