"""The one adapter to Consul: typed calls on a light transport, and py-consul with its gaps filled.

The project's own requests go through :mod:`manifest_runner.consul.transport` (standard library: it imports in a few
milliseconds, where py-consul's ``requests`` costs ~150 ms at every start of the command). ``ConsulClient.raw`` is a
genuine py-consul ``consul.Consul`` bridged onto that same transport (:mod:`manifest_runner.consul.pyconsul`, the
only module that imports the client library, on first use), so code written for py-consul gets everything below.

What it adds to py-consul:

- settings from Consul's own environment contract with flag precedence (:mod:`manifest_runner.config`), instead
  of py-consul's (where ``CONSUL_HTTP_TOKEN`` silently beats an explicit token);
- the token sent as the ``X-Consul-Token`` header on **every** request (py-consul forgets it on ``/v1/txn``), never
  in a URL, a log line or an error;
- ``unix:///path`` addresses, ``CONSUL_TLS_SERVER_NAME``, CA folder, client certificates;
- a timeout on every request (a blocking query adds its wait and Consul's wait/16 jitter);
- answers mapped to one exception tree naming the operation and status (:mod:`manifest_runner.errors`):
  unreachable or "no leader" -> :class:`ConsulUnavailable`, 401/403 and TLS refusals -> :class:`ConsulRefused`, an
  answer that is not what Consul sends -> :class:`ConsulProtocolError`, anything else -> :class:`ConsulRequestError`;
  404 and a transaction's 409 are answers, not errors;
- typed results: every JSON body is read by :mod:`manifest_runner.consul.payloads`, and nothing else;
- transactions batched under the server's operation limit (64 before Consul 1.14, 128 after), learnt from the
  agent's version and corrected from a 413 answer;
- a count of requests by kind, for tests ("an unchanged apply writes nothing") and benchmarks.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from manifest_runner.config import ConsulConfig
from manifest_runner.consul import payloads
from manifest_runner.consul.payloads import AgentInfo, AgentService, CheckState, Instance, KVPair, PayloadError
from manifest_runner.consul.transport import Answer, HttpTransport, Transport, TransportError
from manifest_runner.errors import (
    ConsulError,
    ConsulProtocolError,
    ConsulRefused,
    ConsulRequestError,
    ConsulUnavailable,
)
from manifest_runner.util.durations import parse_duration

DEFAULT_WAIT = 300.0
TXN_BODY_LIMIT = 512 * 1024
T = TypeVar("T")


class TxnFailed(ConsulError):
    """A transaction was rolled back (HTTP 409): nothing in it was applied. ``errors`` are ``(op_index, what)``."""

    def __init__(self, errors: list[tuple[int, str]]) -> None:
        self.errors = errors
        detail = "; ".join(f"op {index}: {what}" for index, what in errors) or "rolled back"
        super().__init__(f"transaction rolled back: {detail}", operation="PUT /v1/txn", status=409)


class TxnTooLarge(ConsulRequestError):
    """The server refused a transaction for its number of operations; ``limit`` is the server's limit."""

    def __init__(self, message: str, limit: int) -> None:
        self.limit = limit
        super().__init__(message, operation="PUT /v1/txn", status=413)


class CheckNotFound(ConsulRequestError):
    """The agent does not know this check (it restarted empty, or the service was deregistered)."""


def _raise_for_status(answer: Answer, operation: str, path: str) -> None:
    status = answer.status
    if status < 400 or status == 404 or (status == 409 and path == "/v1/txn"):
        return
    body = answer.body.decode("utf-8", "replace").strip()[:300]
    if status in (401, 403):
        raise ConsulRefused(
            f"permission denied ({body or 'no reason given'}); check the ACL token's policy",
            operation=operation,
            status=status,
        )
    if status == 500 and "leader" in body.lower():
        raise ConsulUnavailable(f"Consul has no cluster leader ({body})", operation=operation, status=status)
    if status == 413 and path == "/v1/txn":
        match = re.search(r"\((\d+) > (\d+)\)", body)
        if match:
            raise TxnTooLarge(body, int(match.group(2)))
    if status == 429:
        raise ConsulUnavailable(f"Consul is rate-limiting this client ({body})", operation=operation, status=status)
    raise ConsulRequestError(body or answer.reason or "error", operation=operation, status=status)


def _blocking_wait(params: Iterable[tuple[str, Any]]) -> float | None:
    values = dict(params)
    if "index" not in values:
        return None
    return parse_duration(str(values["wait"])) if "wait" in values else DEFAULT_WAIT


class ConsulClient:
    """Typed access to the parts of Consul's HTTP API this project uses. Thread-safe (a shared connection pool).

    ``transport`` replaces the HTTP transport (tests use a scripted one at this seam); by default one is built from
    the settings."""

    def __init__(self, settings: ConsulConfig, *, max_idle: int = 8, transport: HttpTransport | None = None) -> None:
        self.settings = settings
        self.endpoint = settings.endpoint()
        self._token = settings.resolved_token()
        self._transport: HttpTransport = transport or Transport(
            self.endpoint,
            verify=settings.verify(),
            cert=settings.client_certificate(),
            server_name=settings.tls_server_name,
            timeout=settings.timeout,
            max_idle=max_idle,
        )
        self._raw: Any = None
        self._op_limit: int | None = None
        self._version: str | None = None
        self._counts_lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.counts_by_path: dict[str, int] = {}

    @classmethod
    def from_env(cls, **flags: Any) -> ConsulClient:
        return cls(ConsulConfig.from_sources(flags))

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

    def clone(self) -> ConsulClient:
        """A client with the same settings and a connection of its own: for a blocking query that must be
        stoppable at once (:meth:`abort`) without disturbing other requests."""
        twin = ConsulClient(self.settings, max_idle=1, transport=self._transport.twin(max_idle=1))
        twin._token = self._token
        twin._op_limit = self._op_limit
        twin._version = self._version
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

    def __enter__(self) -> ConsulClient:
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
    ) -> Answer:
        """One request, the token in its header; errors mapped to the project's tree. 404 is an answer.

        ``timeout`` (seconds) caps the request below the configured one, e.g. to stay within a total budget."""
        params = list(params or [])
        operation = f"{method} {path}"
        wait = _blocking_wait(params)
        base = self.settings.timeout if timeout is None else min(timeout, self.settings.timeout)
        timeout = base + (wait + wait / 16 if wait is not None else 0.0)
        all_headers = dict(headers or {})
        if self._token and "X-Consul-Token" not in all_headers:
            all_headers["X-Consul-Token"] = self._token
        with self._counts_lock:
            self.counts[method] = self.counts.get(method, 0) + 1
            self.counts_by_path[operation] = self.counts_by_path.get(operation, 0) + 1
        try:
            answer = self._transport.request(method, path, params, data, headers=all_headers, timeout=timeout)
        except TransportError as err:
            where = self.endpoint.url
            if err.kind == "tls":
                raise ConsulRefused(f"TLS handshake with {where} failed: {err.reason}", operation=operation) from None
            if err.kind == "timeout":
                raise ConsulUnavailable(f"no answer from {where} within {timeout:g}s", operation=operation) from None
            raise ConsulUnavailable(f"cannot reach Consul at {where}: {err.reason}", operation=operation) from None
        _raise_for_status(answer, operation, path)
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
    ) -> tuple[int, T | None]:
        """One request whose JSON answer is decoded by ``decode`` (from :mod:`.payloads`): (index, value), value
        ``None`` on a 404. ``blocking``: the answer must carry ``X-Consul-Index`` (every blocking endpoint of
        Consul sends it). An answer of another shape is a :class:`ConsulProtocolError`."""
        answer = self.send(method, path, params, data, timeout=timeout)
        operation = f"{method} {path}"
        try:
            index = payloads.consul_index(answer.headers, required=blocking and answer.status != 404)
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

    # -- agent ------------------------------------------------------------------------------------------------

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

    def agent_services(self, filter_expr: str | None = None) -> dict[str, AgentService]:
        params = [("filter", filter_expr)] if filter_expr else []
        _, services = self.read("GET", "/v1/agent/services", payloads.agent_services, params)
        return services or {}

    def register_service(self, payload: Mapping[str, Any]) -> None:
        self.send("PUT", "/v1/agent/service/register", [("replace-existing-checks", "true")], json.dumps(payload))

    def deregister_service(self, service_id: str) -> None:
        self.send("PUT", f"/v1/agent/service/deregister/{service_id}")

    def update_ttl(self, check_id: str, status: str, output: str = "") -> None:
        """Report a TTL check's status: ``passing``, ``warning`` or ``critical``."""
        body = json.dumps({"Status": status, "Output": output[:4096]})
        try:
            answer = self.send("PUT", f"/v1/agent/check/update/{check_id}", data=body)
        except ConsulRequestError as err:
            # Consul 1.8 answers 500 "does not have associated TTL" for an unknown check; later versions 404
            if "associated TTL" in err.detail or "Unknown check" in err.detail:
                raise CheckNotFound(err.detail, operation=err.operation, status=err.status) from None
            raise
        if answer.status == 404:
            raise CheckNotFound("unknown check", operation=f"PUT /v1/agent/check/update/{check_id}", status=404)

    # -- status, catalog, health ------------------------------------------------------------------------------

    def leader(self) -> str:
        _, leader = self.read("GET", "/v1/status/leader", lambda body: payloads.text(body, "the leader"))
        return leader or ""

    def datacenters(self) -> list[str]:
        _, names = self.read("GET", "/v1/catalog/datacenters", lambda body: payloads.texts(body, "datacenters"))
        return names or []

    def node_services(
        self, node: str, *, index: int | None = None, wait: str | None = None
    ) -> tuple[int, dict[str, AgentService]]:
        """The services the catalog holds for ``node``; ``index`` and ``wait`` make it a blocking query."""
        params: list[tuple[str, Any]] = []
        self._blocking(params, index, wait)
        found, services = self.read(
            "GET", f"/v1/catalog/node-services/{node}", payloads.node_services, params, blocking=True
        )
        return found, services or {}

    def checks_in_state(
        self, state: str = "any", *, datacenter: str | None = None, index: int | None = None, wait: str | None = None
    ) -> tuple[int, list[CheckState]]:
        """Every check in ``state`` (``any``, ``passing``, ``warning``, ``critical``) in the datacenter."""
        params: list[tuple[str, Any]] = self._dc(datacenter)
        self._blocking(params, index, wait)
        found, states = self.read("GET", f"/v1/health/state/{state}", payloads.check_states, params, blocking=True)
        return found, states or []

    def catalog_services(
        self, *, datacenter: str | None = None, index: int | None = None, wait: str | None = None
    ) -> tuple[int, dict[str, tuple[str, ...]]]:
        """Every service name in the datacenter, with its tags."""
        params: list[tuple[str, Any]] = self._dc(datacenter)
        self._blocking(params, index, wait)
        found, names = self.read("GET", "/v1/catalog/services", payloads.catalog_services, params, blocking=True)
        return found, names or {}

    def health_service(
        self,
        name: str,
        *,
        passing: bool = False,
        tags: Iterable[str] = (),
        datacenter: str | None = None,
        filter_expr: str | None = None,
        near: str | None = None,
        index: int | None = None,
        wait: str | None = None,
        timeout: float | None = None,
    ) -> tuple[int, list[Instance]]:
        """Instances of a service with their health; ``index`` and ``wait`` make it a blocking query."""
        params: list[tuple[str, Any]] = [("tag", tag) for tag in tags]
        if passing:
            params.append(("passing", "1"))
        params += self._dc(datacenter)
        if filter_expr:
            params.append(("filter", filter_expr))
        if near:
            params.append(("near", near))
        self._blocking(params, index, wait)
        found, items = self.read(
            "GET",
            f"/v1/health/service/{name}",
            lambda body: payloads.instances(body, datacenter),
            params,
            timeout=timeout,
            blocking=True,
        )
        return found, items or []

    # -- KV ---------------------------------------------------------------------------------------------------

    def kv_get(
        self,
        key: str,
        *,
        recurse: bool = False,
        datacenter: str | None = None,
        index: int | None = None,
        wait: str | None = None,
        timeout: float | None = None,
    ) -> tuple[int, list[KVPair]]:
        """Entries at ``key`` (or under it with ``recurse``), values decoded to bytes; ``[]`` when absent."""
        params: list[tuple[str, Any]] = self._dc(datacenter)
        if recurse:
            params.append(("recurse", "1"))
        self._blocking(params, index, wait)
        found, pairs = self.read("GET", f"/v1/kv/{key}", payloads.kv_pairs, params, timeout=timeout, blocking=True)
        return found, pairs or []

    def kv_keys(
        self,
        prefix: str,
        *,
        datacenter: str | None = None,
        index: int | None = None,
        wait: str | None = None,
        timeout: float | None = None,
    ) -> tuple[int, list[str]]:
        """The key names under ``prefix`` (a light way to block on a prefix)."""
        params: list[tuple[str, Any]] = [*self._dc(datacenter), ("keys", "1")]
        self._blocking(params, index, wait)
        found, keys = self.read("GET", f"/v1/kv/{prefix}", payloads.kv_keys, params, timeout=timeout, blocking=True)
        return found, keys or []

    def kv_put(
        self,
        key: str,
        value: bytes,
        *,
        flags: int | None = None,
        cas: int | None = None,
        acquire: str | None = None,
        release: str | None = None,
    ) -> bool:
        params: list[tuple[str, Any]] = []
        if flags is not None:
            params.append(("flags", flags))
        if cas is not None:
            params.append(("cas", cas))
        if acquire:
            params.append(("acquire", acquire))
        if release:
            params.append(("release", release))
        _, done = self.read("PUT", f"/v1/kv/{key}", lambda body: payloads.flag(body, "the answer"), params, value)
        return bool(done)

    def kv_delete(self, key: str, *, cas: int | None = None, recurse: bool = False) -> bool:
        params: list[tuple[str, Any]] = [("cas", cas)] if cas is not None else []
        if recurse:
            params.append(("recurse", "1"))
        _, done = self.read("DELETE", f"/v1/kv/{key}", lambda body: payloads.flag(body, "the answer"), params)
        return bool(done)

    def read_trees(self, prefixes: Iterable[str]) -> list[KVPair]:
        """Every entry under each prefix, in as few read-only transactions as the op limit allows (usually one)."""
        ops = [{"KV": {"Verb": "get-tree", "Key": prefix}} for prefix in dict.fromkeys(prefixes)]
        limit = self._op_limit or 64
        entries: list[KVPair] = []
        for start in range(0, len(ops), limit):
            entries.extend(self.txn(ops[start : start + limit]))
        return entries

    def txn(self, ops: list[dict[str, Any]]) -> list[KVPair]:
        """One transaction; returns its KV results. Raises :class:`TxnFailed` (409) or :class:`TxnTooLarge` (413)."""
        try:
            answer = self.send("PUT", "/v1/txn", data=json.dumps(ops))
        except TxnTooLarge as err:
            self._op_limit = err.limit
            raise
        decode = payloads.txn_errors if answer.status == 409 else payloads.txn_results
        try:
            body = payloads.json_body(answer.body)
            result = decode(body)
        except PayloadError as err:
            raise ConsulProtocolError(
                f"the answer is not what Consul sends ({err}); is this a Consul agent?",
                operation="PUT /v1/txn",
                status=answer.status,
            ) from None
        if answer.status == 409:
            raise TxnFailed(result)  # type: ignore[arg-type]
        return result  # type: ignore[return-value]

    # -- sessions -----------------------------------------------------------------------------------------------

    def session_create(self, name: str, ttl: str, *, lock_delay: str = "15s", behavior: str = "release") -> str:
        body = json.dumps({"Name": name, "TTL": ttl, "LockDelay": lock_delay, "Behavior": behavior})
        _, session = self.read("PUT", "/v1/session/create", payloads.session_id, data=body)
        if session is None:
            raise ConsulProtocolError("no session was created", operation="PUT /v1/session/create", status=404)
        return session

    def session_renew(self, session_id: str) -> bool:
        _, renewed = self.read("PUT", f"/v1/session/renew/{session_id}", lambda body: body)
        return renewed is not None and bool(renewed)

    def session_destroy(self, session_id: str) -> None:
        self.send("PUT", f"/v1/session/destroy/{session_id}")


def txn_op_size(key: str, value_length: int) -> int:
    """The bytes one KV operation adds to a transaction's body, at most: JSON framing (verb, flags, index), the key
    (escaped, up to 6 bytes a character) and the value, base64-encoded."""
    return 120 + 6 * len(key) + 4 * ((value_length + 2) // 3)
