"""The plumbing under every typed call: settings, the transport, the token header, errors and decoding.

:class:`BaseClient` sends one request (:meth:`BaseClient.send`) or one request whose JSON answer is decoded by
:mod:`.payloads` (:meth:`BaseClient.read`); the typed calls are built on these two in :mod:`.client` and :mod:`.kv`.
"""

from __future__ import annotations

import copy
import re
import ssl
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Self, TypeVar

from manifest_runner.config import ConsulConfig
from manifest_runner.consul import payloads
from manifest_runner.consul.payloads import AgentInfo, PayloadError
from manifest_runner.consul.statuses import raise_for_status
from manifest_runner.consul.transport import Answer, HttpTransport, Transport, TransportError
from manifest_runner.errors import (
    AgentUnreachable,
    ConsulProtocolError,
    ConsulRefused,
    ConsulUnavailable,
    ConsulUnsupportedFeature,
    SettingsError,
)
from manifest_runner.util.durations import parse_duration

DEFAULT_WAIT = 300.0
T = TypeVar("T")


@dataclass(frozen=True)
class Freshness:
    """How fresh a read must be. Default: from the leader (Consul's default consistency).

    ``max_stale`` (seconds): any server may answer (``?stale``), which spreads reads over every server instead of the
    leader; an answer whose ``X-Consul-LastContact`` says that server was out of touch with the leader for longer
    is asked again of the leader. ``cached``: the agent's cache answers (``?cached``), kept current by one background
    blocking query per distinct request on the agent, shared by every client of that agent."""

    max_stale: float | None = None
    cached: bool = False

    def params(self) -> list[tuple[str, str]]:
        if self.cached:
            return [("cached", "")]
        return [("stale", "")] if self.max_stale is not None else []

    def for_kv(self) -> Freshness:
        """The agent cache does not hold KV: a cached read of a key is a stale one (bounded the same way)."""
        return Freshness(self.max_stale) if self.cached else self

    def too_stale(self, headers: Any) -> bool:
        if self.cached or self.max_stale is None:
            return False
        contact = headers.get("X-Consul-LastContact")
        if contact is None or not str(contact).isdigit():
            return False
        return int(contact) > self.max_stale * 1000


LEADER = Freshness()


def _blocking_wait(params: Iterable[tuple[str, Any]]) -> float | None:
    values = dict(params)
    if "index" not in values:
        return None
    return parse_duration(str(values["wait"])) if "wait" in values else DEFAULT_WAIT


class BaseClient:
    """Requests to one Consul agent, with the settings' address, TLS, token and timeouts. Thread-safe."""

    def __init__(self, settings: ConsulConfig, *, max_idle: int = 8, transport: HttpTransport | None = None) -> None:
        self.settings = settings
        self.endpoint = settings.endpoint()
        self._token = settings.resolved_token()
        if transport is None:
            try:
                transport = Transport(
                    self.endpoint,
                    verify=settings.verify(),
                    cert=settings.client_certificate(),
                    server_name=settings.tls_server_name,
                    timeout=settings.timeout,
                    max_idle=max_idle,
                )
            except (ssl.SSLError, OSError) as err:  # a CA file or client certificate that is not PEM, a bad key
                raise SettingsError(f"the TLS files cannot be used: {err}") from None
        self._transport: HttpTransport = transport
        self._raw: Any = None
        self._op_limit: int | None = None
        self._version: str | None = None
        self._enterprise: bool | None = None
        self._counts_lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.counts_by_path: dict[str, int] = {}
        self.bytes_received = 0
        self.stale_retries = 0

    @property
    def raw(self) -> Any:
        """A genuine py-consul ``consul.Consul`` on this adapter's transport (imported on first use)."""
        if self._raw is None:
            from manifest_runner.consul.pyconsul import facade

            self._raw = facade(self, self.settings.datacenter)
        return self._raw

    @property
    def address(self) -> str:
        return self.endpoint.url

    @property
    def datacenter(self) -> str | None:
        return self.settings.datacenter

    def clone(self) -> Self:
        """A client with the same settings and a connection of its own: for a blocking query that must be
        stoppable at once (:meth:`abort`) without disturbing other requests."""
        twin = copy.copy(self)
        twin._transport = self._transport.twin(max_idle=1)
        twin._counts_lock = threading.Lock()
        twin.counts, twin.counts_by_path, twin.bytes_received, twin.stale_retries = {}, {}, 0, 0
        twin._raw = None
        return twin

    def abort(self) -> None:
        """Interrupt every request in flight and refuse new ones (see :meth:`Transport.abort`)."""
        self._transport.abort()

    def request_counts(self, by_path: bool = False) -> dict[str, int]:
        """Requests sent so far, by HTTP method (or by ``METHOD /path``)."""
        with self._counts_lock:
            return dict(self.counts_by_path if by_path else self.counts)

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------------------------------

    def send(
        self,
        method: str,
        path: str,
        params: Iterable[tuple[str, Any]] | None = None,
        data: str | bytes | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        idempotent: bool | None = None,
    ) -> Answer:
        """One request, the token in its header; errors mapped to the project's tree. 404 is an answer.

        ``timeout`` (seconds) caps the request below the configured one, e.g. to stay within a total budget;
        ``idempotent`` says that sending it twice is harmless (GET is; see :meth:`Transport.request`)."""
        params = [*(params or []), *self._tenancy(path)]
        wait = _blocking_wait(params)
        base = self.settings.timeout if timeout is None else min(timeout, self.settings.timeout)
        timeout = base + (wait + wait / 16 if wait is not None else 0.0)
        answer = self._request(method, path, params, data, headers=headers, timeout=timeout, idempotent=idempotent)
        raise_for_status(answer, f"{method} {path}", path)
        return answer

    def exchange(
        self,
        method: str,
        path: str,
        params: Iterable[tuple[str, Any]] | None = None,
        data: str | bytes | None = None,
        *,
        headers: Mapping[str, str] | None = None,
        timeout: float,
    ) -> Answer:
        """One request whose answer, whatever its status, is returned as it is (for py-consul, whose callbacks judge
        statuses themselves); only a request that gets no answer raises. ``timeout`` is the whole request's, as
        given (not capped by the settings': py-consul's own timeouts apply on its bridge)."""
        params = [*(params or []), *self._tenancy(path)]
        return self._request(method, path, params, data, headers=headers, timeout=timeout, idempotent=None)

    def _request(
        self,
        method: str,
        path: str,
        params: list[tuple[str, Any]],
        data: str | bytes | None,
        *,
        headers: Mapping[str, str] | None,
        timeout: float,
        idempotent: bool | None,
    ) -> Answer:
        """Send and count one request, the token in its header; a request that gets no answer raises, mapped to
        the project's errors (TLS refused, timed out, too large, unreachable). Any status is returned."""
        operation = f"{method} {path}"
        all_headers = dict(headers or {})
        if self._token and "X-Consul-Token" not in all_headers:
            all_headers["X-Consul-Token"] = self._token
        with self._counts_lock:
            self.counts[method] = self.counts.get(method, 0) + 1
            self.counts_by_path[operation] = self.counts_by_path.get(operation, 0) + 1
        try:
            answer = self._transport.request(
                method, path, params, data, headers=all_headers, timeout=timeout, idempotent=idempotent
            )
        except TransportError as err:
            where = self.endpoint.url
            if err.kind == "tls":
                raise ConsulRefused(f"TLS handshake with {where} failed: {err.reason}", operation=operation) from None
            if err.kind == "timeout":
                raise ConsulUnavailable(f"no answer from {where} within {timeout:g}s", operation=operation) from None
            if err.kind == "too_large":
                raise ConsulProtocolError(f"{err.reason}; is this a Consul agent?", operation=operation) from None
            raise AgentUnreachable(f"cannot reach Consul at {where}: {err.reason}", operation=operation) from None
        with self._counts_lock:
            self.bytes_received += answer.wire
        return answer

    def read(
        self,
        method: str,
        path: str,
        decode: Callable[[Any], T],
        params: Iterable[tuple[str, Any]] | None = None,
        data: str | bytes | None = None,
        *,
        timeout: float | None = None,
        blocking: bool = False,
        idempotent: bool | None = None,
        absent_ok: bool = False,
        freshness: Freshness = LEADER,
    ) -> tuple[int, T | None]:
        """One request whose JSON answer is decoded by ``decode`` (from :mod:`.payloads`): (index, value).

        ``absent_ok``: a 404 means "absent" (value ``None``); elsewhere Consul never answers 404, and one means
        that something else answers in its place. ``blocking``: the answer, a 404 included, must carry
        ``X-Consul-Index`` (Consul's KV, catalog and health reads always do). An answer of another shape is a
        :class:`ConsulProtocolError`. ``freshness``: see :class:`Freshness`."""
        params = list(params or [])
        answer = self.send(method, path, [*params, *freshness.params()], data, timeout=timeout, idempotent=idempotent)
        if freshness.too_stale(answer.headers):
            with self._counts_lock:
                self.stale_retries += 1
            answer = self.send(method, path, params, data, timeout=timeout, idempotent=idempotent)
        operation = f"{method} {path}"
        if answer.status == 404 and not absent_ok:
            raise ConsulProtocolError(
                "404 Not Found where Consul always answers; is this a Consul agent?", operation=operation, status=404
            )
        try:
            index = payloads.consul_index(answer.headers, required=blocking)
            if answer.status == 404:
                return index, None
            return index, decode(payloads.json_body(answer.body))
        except PayloadError as err:
            raise ConsulProtocolError(
                f"the answer is not what Consul sends ({err}); is this a Consul agent?",
                operation=operation,
                status=answer.status,
            ) from None

    def _dc(self, datacenter: str | None) -> list[tuple[str, str]]:
        dc = datacenter or self.settings.datacenter
        return [("dc", dc)] if dc else []

    @staticmethod
    def _blocking(params: list[tuple[str, Any]], index: int | None, wait: str | None) -> None:
        if index is not None:
            params.append(("index", max(1, index)))  # never block with index 0: it would return at once
            if wait:
                params.append(("wait", wait))

    def _tenancy(self, path: str) -> list[tuple[str, str]]:
        """``ns`` and ``partition`` for a request, once the agent is known to be Consul Enterprise (checked on the
        first request that would carry them: a Consul without namespaces would ignore them and write to the default
        namespace)."""
        wanted = [
            (name, value)
            for name, value in (("ns", self.settings.namespace), ("partition", self.settings.partition))
            if value and value != "default"
        ]
        if not wanted or path == "/v1/agent/self":
            return []
        if self._enterprise is None:
            try:
                self._enterprise = "+ent" in self.version()
            except ConsulRefused:
                raise ConsulUnsupportedFeature(
                    "a namespace or partition is asked, and whether this Consul is Consul Enterprise cannot be told "
                    "(the token may not read /v1/agent/self: agent:read is needed); Consul without namespaces would "
                    "ignore it and use the default namespace; nothing was sent",
                    operation=path,
                ) from None
        if not self._enterprise:
            names = ", ".join(f"{'namespace' if n == 'ns' else 'partition'} {v!r}" for n, v in wanted)
            raise ConsulUnsupportedFeature(
                f"{names} asked (CONSUL_NAMESPACE / CONSUL_PARTITION or the flag), but this Consul ({self.version()}) "
                "is not Consul Enterprise: it would ignore them and use the default namespace; nothing was sent",
                operation=f"{path}",
            )
        return wanted

    def agent_self(self) -> AgentInfo:
        _, info = self.read("GET", "/v1/agent/self", payloads.agent_info)
        if info is None:
            raise ConsulProtocolError("no agent description", operation="GET /v1/agent/self", status=404)
        return info

    def version(self) -> str:
        if self._version is None:
            self._version = self.agent_self().version
        return self._version

    def op_limit(self) -> int:
        """The most operations one transaction may hold on this cluster (64 before Consul 1.14, 128 after)."""
        if self._op_limit is None:
            numbers = [int(n) for n in re.findall(r"\d+", self.version())[:2]] + [0, 0]
            self._op_limit = 128 if (numbers[0], numbers[1]) >= (1, 14) else 64
        return self._op_limit
