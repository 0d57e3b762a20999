"""py-consul, bridged onto the adapter's transport: the only module that imports the client library.

``facade(client)`` returns a genuine ``consul.Consul`` whose every request goes through
:meth:`ConsulClient.send`: the settings' address (unix sockets and TLS included), the token as a header (also on the
endpoints where py-consul forgets it), timeouts, and errors mapped to the project's tree. Imported on first use only:
py-consul brings ``requests``, which the command line does not need.
"""

from __future__ import annotations

from typing import Any, Protocol

import consul
import consul.base

from manifest_runner.config import Endpoint
from manifest_runner.consul.transport import Answer


class Sender(Protocol):
    """What the bridge needs of :class:`~manifest_runner.consul.client.ConsulClient`: its endpoint and ``send``."""

    endpoint: Endpoint

    def send(
        self,
        method: str,
        path: str,
        params: Any = None,
        data: str | bytes | None = None,
        *,
        headers: Any = None,
        timeout: float | None = None,
    ) -> Answer: ...


class _Bridge(consul.base.HTTPClient):  # type: ignore[misc]
    """py-consul's HTTP interface (callbacks over a Response) on :meth:`ConsulClient.send`."""

    def __init__(self, client: Sender) -> None:
        endpoint = client.endpoint
        super().__init__(endpoint.host, endpoint.port, "https" if endpoint.scheme == "https" else "http")
        self._client = client

    def _do(self, method: str, callback: Any, path: str, *, params: Any, data: Any, headers: Any) -> Any:
        answer = self._client.send(
            method, path, list(params or []), data if data not in ("", None) else None, headers=dict(headers or {})
        )
        return callback(consul.base.Response(answer.status, answer.headers, answer.body.decode("utf-8", "replace")))

    def get(self, callback: Any, path: str, params: Any = None, headers: Any = None, raw: bool = False) -> Any:
        if raw:
            answer = self._client.send("GET", path, list(params or []), None, headers=dict(headers or {}))
            return callback(consul.base.Response(answer.status, answer.headers, answer.body))
        return self._do("GET", callback, path, params=params, data=None, headers=headers)

    def put(self, callback: Any, path: str, params: Any = None, data: Any = "", headers: Any = None) -> Any:
        return self._do("PUT", callback, path, params=params, data=data, headers=headers)

    def delete(self, callback: Any, path: str, params: Any = None, data: Any = "", headers: Any = None) -> Any:
        return self._do("DELETE", callback, path, params=params, data=data, headers=headers)

    def post(self, callback: Any, path: str, params: Any = None, data: Any = "", headers: Any = None) -> Any:
        return self._do("POST", callback, path, params=params, data=data, headers=headers)

    def close(self) -> None:
        """The transport belongs to the ConsulClient, which closes it."""


class _Facade(consul.base.Consul):  # type: ignore[misc]
    def __init__(self, client: Sender, datacenter: str | None) -> None:
        self._bridge = _Bridge(client)
        super().__init__(host=client.endpoint.host, port=client.endpoint.port, token=None, dc=datacenter)
        self.token = None  # the transport adds the configured token; py-consul must not add CONSUL_HTTP_TOKEN's

    def http_connect(self, host: str, port: int, scheme: str, verify: Any = True, cert: Any = None) -> _Bridge:
        return self._bridge


def facade(client: Sender, datacenter: str | None = None) -> Any:
    """A ``consul.Consul`` (py-consul) whose requests go through ``client``."""
    return _Facade(client, datacenter)
