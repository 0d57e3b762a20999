"""py-consul, bridged onto the adapter's transport: the only module that imports the client library.

``facade(client)`` returns a genuine ``consul.Consul`` whose every request goes through the adapter's transport: the
settings' address (unix sockets and TLS included), the token as a header (also on the endpoints where py-consul
forgets it), gzip, and py-consul's own semantics everywhere else:

- **every answer reaches py-consul's callbacks as it came**, whatever its status: py-consul raises its own
  exceptions (``ACLPermissionDenied`` for 403, ``NotFound``, ``BadRequest``...) and returns what it returns (a 429
  from ``/v1/operator/autopilot/health`` is "unhealthy", not an error);
- **py-consul's timeouts**: ``connections_timeout`` (30 s by default, ``None`` for none), plus a blocking query's
  wait and its jitter;
- a request that gets no answer at all raises :class:`BridgeUnavailable`, which is both py-consul's
  ``ConsulException`` and the project's ``ConsulUnavailable``, so either kind of caller catches it.

Imported on first use only: py-consul brings ``requests``, which the command line does not need.
"""

from __future__ import annotations

import re
from typing import Any, Protocol

import consul
import consul.base

from manifest_runner.config import Endpoint
from manifest_runner.consul.transport import Answer
from manifest_runner.errors import ConsulError, ConsulUnavailable

DEFAULT_TIMEOUT = 30.0
"""py-consul's ``connections_timeout`` default."""
DEFAULT_WAIT = 300.0
NO_TIMEOUT = 24 * 3600.0
"""What ``connections_timeout=None`` means here: the transport always has a deadline; this one is a day."""
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class BridgeUnavailable(ConsulUnavailable, consul.ConsulException):  # type: ignore[misc]
    """No answer at all (refused, reset, timed out) through the bridge: py-consul's and the project's error."""


class Exchanger(Protocol):
    """What the bridge needs of :class:`~manifest_runner.consul.client.ConsulClient`."""

    endpoint: Endpoint

    def exchange(
        self,
        method: str,
        path: str,
        params: Any = None,
        data: str | bytes | None = None,
        *,
        headers: Any = None,
        timeout: float,
    ) -> Answer: ...


def _wait_seconds(text: str) -> float:
    return sum(float(n) * _UNITS[u] for n, u in re.findall(r"([\d.]+)(ns|us|µs|ms|s|m|h)", text))


class _Bridge(consul.base.HTTPClient):  # type: ignore[misc]
    """py-consul's HTTP interface (callbacks over a Response) on the adapter's transport."""

    def __init__(self, client: Exchanger, connections_timeout: float | None) -> None:
        endpoint = client.endpoint
        super().__init__(endpoint.host, endpoint.port, "https" if endpoint.scheme == "https" else "http")
        self._client = client
        self.connections_timeout = connections_timeout

    def timeout(self, params: Any) -> float:
        """py-consul's: the connections timeout, plus the wait and its jitter for a blocking query."""
        if self.connections_timeout is None:
            return NO_TIMEOUT
        values = dict(params or ())
        if "index" not in values:
            return self.connections_timeout
        wait = _wait_seconds(str(values["wait"])) if "wait" in values else DEFAULT_WAIT
        return self.connections_timeout + wait + wait / 16

    def _answer(self, method: str, path: str, params: Any, data: Any, headers: Any) -> Answer:
        body = data if data not in ("", None) else None
        try:
            return self._client.exchange(
                method, path, list(params or []), body, headers=dict(headers or {}), timeout=self.timeout(params)
            )
        except ConsulUnavailable as err:
            raise BridgeUnavailable(err.detail, operation=err.operation, status=err.status) from None
        except ConsulError as err:  # a TLS failure, an answer too large: no answer py-consul could judge
            raise BridgeUnavailable(str(err), operation=err.operation, status=err.status) from None

    def _do(self, method: str, callback: Any, path: str, *, params: Any, data: Any, headers: Any) -> Any:
        answer = self._answer(method, path, params, data, headers)
        return callback(consul.base.Response(answer.status, answer.headers, answer.body.decode("utf-8", "replace")))

    def get(self, callback: Any, path: str, params: Any = None, headers: Any = None, raw: bool = False) -> Any:
        if raw:
            answer = self._answer("GET", path, params, None, headers)
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
    def __init__(
        self,
        client: Exchanger,
        datacenter: str | None,
        connections_timeout: float | None,
        consistency: str = "default",
    ) -> None:
        self._bridge = _Bridge(client, connections_timeout)
        super().__init__(
            host=client.endpoint.host, port=client.endpoint.port, token=None, dc=datacenter, consistency=consistency
        )
        self.token = None  # the transport adds the configured token; py-consul must not add CONSUL_HTTP_TOKEN's

    def http_connect(self, host: str, port: int, scheme: str, verify: Any = True, cert: Any = None) -> _Bridge:
        return self._bridge


def facade(
    client: Exchanger,
    datacenter: str | None = None,
    *,
    connections_timeout: float | None = DEFAULT_TIMEOUT,
    consistency: str = "default",
) -> Any:
    """A ``consul.Consul`` (py-consul) whose requests go through ``client``'s transport, with py-consul's
    semantics (see the module's description)."""
    return _Facade(client, datacenter, connections_timeout, consistency)
