"""A scripted HTTP transport for fast unit tests of the client's own logic (batching, retries, loops, fallbacks).

Not a model of Consul: each test scripts the answers it needs, as httpx's ``MockTransport`` does, and Consul's
real behaviour is tested against real agents in ``tests/integration``.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import Message
from typing import Any
from urllib.parse import urlencode

from manifest_runner.config import ConsulConfig
from manifest_runner.consul.client import ConsulClient
from manifest_runner.consul.transport import Answer, TransportError


@dataclass(frozen=True)
class Sent:
    method: str
    path: str
    params: dict[str, str]
    body: bytes | None
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body or b"null")


Handler = Callable[[Sent], Answer]


def answer(status: int = 200, body: Any = None, *, index: int | None = None, raw: bytes | None = None) -> Answer:
    headers = Message()
    if index is not None:
        headers["X-Consul-Index"] = str(index)
    data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
    return Answer(status, headers, data, "OK" if status < 400 else "Error")


@dataclass
class ScriptedTransport:
    handler: Handler
    sent: list[Sent] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

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
        data = body.encode() if isinstance(body, str) else body
        request = Sent(method, path, {k: str(v) for k, v in params or []}, data, dict(headers or {}))
        with self.lock:
            self.sent.append(request)
        return self.handler(request)

    def twin(self, *, max_idle: int = 1) -> ScriptedTransport:
        return ScriptedTransport(self.handler, self.sent, self.lock)

    def close(self) -> None:
        return

    def abort(self) -> None:
        return

    def paths(self, method: str | None = None) -> list[str]:
        return [s.path for s in self.sent if method is None or s.method == method]


def client_with(handler: Handler, **settings: Any) -> tuple[ConsulClient, ScriptedTransport]:
    transport = ScriptedTransport(handler)
    config = ConsulConfig.from_sources({"http_addr": "127.0.0.1:1", **settings}, {})
    return ConsulClient(config, transport=transport), transport


def unreachable(_request: Sent) -> Answer:
    raise TransportError("connect", "Connection refused")


__all__ = ["ScriptedTransport", "Sent", "answer", "client_with", "unreachable", "urlencode"]
