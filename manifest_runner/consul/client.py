"""The one adapter to Consul: typed calls on a light transport, and py-consul with its gaps filled.

The project's own requests go through :mod:`manifest_runner.consul.http` (standard library: it imports in a few
milliseconds, where py-consul's ``requests`` costs ~150 ms at every start of the command). ``ConsulClient.raw`` is a
genuine py-consul ``consul.Consul`` bridged onto that same transport (:mod:`manifest_runner.consul.pyconsul`, the
only module that imports the client library, on first use), so code written for py-consul gets everything below.

What it adds to py-consul:

- settings from Consul's own environment contract with flag precedence (:mod:`manifest_runner.settings`), instead
  of py-consul's (where ``CONSUL_HTTP_TOKEN`` silently beats an explicit token);
- the token sent as the ``X-Consul-Token`` header on **every** request (py-consul forgets it on ``/v1/txn``), never
  in a URL, a log line or an error;
- ``unix:///path`` addresses, ``CONSUL_TLS_SERVER_NAME``, CA folder, client certificates;
- a timeout on every request (a blocking query adds its wait and Consul's wait/16 jitter);
- answers mapped to one exception tree naming the operation and status (:mod:`manifest_runner.errors`):
  unreachable or "no leader" -> :class:`ConsulUnavailable`, 401/403 and TLS refusals -> :class:`ConsulRefused`,
  anything else -> :class:`ConsulRequestError`; 404 and a transaction's 409 are answers, not errors;
- transactions batched under the server's operation limit (64 before Consul 1.14, 128 after), learnt from the
  agent's version and corrected from a 413 answer;
- a count of requests by kind, for tests ("an unchanged apply writes nothing") and benchmarks.

"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from manifest_runner.consul.http import Answer, Transport, TransportError
from manifest_runner.durations import parse_duration
from manifest_runner.errors import ConsulError, ConsulRefused, ConsulRequestError, ConsulUnavailable
from manifest_runner.settings import ConsulConfig

DEFAULT_WAIT = 300.0
TXN_BODY_LIMIT = 512 * 1024


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
    """Typed access to the parts of Consul's HTTP API this project uses. Thread-safe (a shared connection pool)."""

    def __init__(self, settings: ConsulConfig, *, max_idle: int = 8) -> None:
        self.settings = settings
        self.endpoint = settings.endpoint()
        self._token = settings.resolved_token()
        self._transport = Transport(
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
        twin = ConsulClient(self.settings, max_idle=1)
        twin._token = self._token
        twin._op_limit = self._op_limit
        twin._version = self._version
        return twin

    def abort(self) -> None:
        """Interrupt every request in flight and refuse new ones (see :meth:`Transport.abort`)."""
        self._transport.abort()

    def request_counts(self, by_path: bool = False) -> dict[str, int]:
        """Requests sent so far, by HTTP method (or by ``METHOD /path``)."""
        return dict(self._transport.counts_by_path if by_path else self._transport.counts)

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

    def call(
        self,
        method: str,
        path: str,
        params: Iterable[tuple[str, Any]] | None = None,
        data: str | bytes | None = None,
        timeout: float | None = None,
    ) -> tuple[int, Mapping[str, str], Any]:
        """One request; returns (status, headers, parsed JSON or None). Errors are already mapped."""
        answer = self.send(method, path, params, data, timeout=timeout)
        body = json.loads(answer.body) if answer.status != 404 and answer.body else None
        return answer.status, dict(answer.headers.items()), body

    def _dc(self, datacenter: str | None) -> list[tuple[str, str]]:
        dc = datacenter or self.settings.datacenter
        return [("dc", dc)] if dc else []

    # -- agent ------------------------------------------------------------------------------------------------

    def agent_self(self) -> dict[str, Any]:
        _, _, body = self.call("GET", "/v1/agent/self")
        return dict(body or {})

    def version(self) -> str:
        if self._version is None:
            self._version = str(self.agent_self().get("Config", {}).get("Version", "0"))
        return self._version

    def op_limit(self) -> int:
        """The most operations one transaction may hold on this cluster (64 before Consul 1.14, 128 after)."""
        if self._op_limit is None:
            numbers = [int(n) for n in re.findall(r"\d+", self.version())[:2]] + [0, 0]
            self._op_limit = 128 if (numbers[0], numbers[1]) >= (1, 14) else 64
        return self._op_limit

    def agent_services(self, filter_expr: str | None = None) -> dict[str, dict[str, Any]]:
        params = [("filter", filter_expr)] if filter_expr else []
        _, _, body = self.call("GET", "/v1/agent/services", params)
        return dict(body or {})

    def register_service(self, payload: Mapping[str, Any]) -> None:
        self.call("PUT", "/v1/agent/service/register", [("replace-existing-checks", "true")], json.dumps(payload))

    def deregister_service(self, service_id: str) -> None:
        self.call("PUT", f"/v1/agent/service/deregister/{service_id}")

    def update_ttl(self, check_id: str, status: str, output: str = "") -> None:
        """Report a TTL check's status: ``passing``, ``warning`` or ``critical``."""
        body = json.dumps({"Status": status, "Output": output[:4096]})
        self.call("PUT", f"/v1/agent/check/update/{check_id}", data=body)

    # -- status, catalog, health ------------------------------------------------------------------------------

    def leader(self) -> str:
        _, _, body = self.call("GET", "/v1/status/leader")
        return str(body or "")

    def datacenters(self) -> list[str]:
        _, _, body = self.call("GET", "/v1/catalog/datacenters")
        return list(body or [])

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
    ) -> tuple[int, list[dict[str, Any]]]:
        """Instances of a service with their node and checks; ``index`` and ``wait`` make it a blocking query."""
        params: list[tuple[str, Any]] = [("tag", tag) for tag in tags]
        if passing:
            params.append(("passing", "1"))
        params += self._dc(datacenter)
        if filter_expr:
            params.append(("filter", filter_expr))
        if near:
            params.append(("near", near))
        if index is not None:
            params.append(("index", max(1, index)))
            if wait:
                params.append(("wait", wait))
        _, headers, body = self.call("GET", f"/v1/health/service/{name}", params, timeout=timeout)
        return int(headers.get("X-Consul-Index", "0") or 0), list(body or [])

    # -- KV ---------------------------------------------------------------------------------------------------

    def kv_get(
        self,
        key: str,
        *,
        recurse: bool = False,
        datacenter: str | None = None,
        index: int | None = None,
        wait: str | None = None,
        keys_only: bool = False,
        timeout: float | None = None,
    ) -> tuple[int, list[dict[str, Any]]]:
        """Entries at ``key`` (or under it with ``recurse``), values decoded to bytes; ``[]`` when absent.
        With ``keys_only``, entries are ``{"Key": name}`` only (a light way to block on a prefix)."""
        params: list[tuple[str, Any]] = self._dc(datacenter)
        if recurse:
            params.append(("recurse", "1"))
        if keys_only:
            params.append(("keys", "1"))
        if index is not None:
            params.append(("index", max(1, index)))
            if wait:
                params.append(("wait", wait))
        _, headers, body = self.call("GET", f"/v1/kv/{key}", params, timeout=timeout)
        entries = [{"Key": k} for k in body or []] if keys_only else [_decoded(entry) for entry in (body or [])]
        return int(headers.get("X-Consul-Index", "0") or 0), entries

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
        _, _, body = self.call("PUT", f"/v1/kv/{key}", params, value)
        return bool(body)

    def kv_delete(self, key: str, *, cas: int | None = None, recurse: bool = False) -> bool:
        params: list[tuple[str, Any]] = [("cas", cas)] if cas is not None else []
        if recurse:
            params.append(("recurse", "1"))
        _, _, body = self.call("DELETE", f"/v1/kv/{key}", params)
        return bool(body)

    def read_trees(self, prefixes: Iterable[str]) -> list[dict[str, Any]]:
        """Every entry under each prefix, in as few read-only transactions as the op limit allows (usually one)."""
        ops = [{"KV": {"Verb": "get-tree", "Key": prefix}} for prefix in dict.fromkeys(prefixes)]
        limit = self._op_limit or 64
        entries: list[dict[str, Any]] = []
        for start in range(0, len(ops), limit):
            for result in self.txn(ops[start : start + limit]):
                if "KV" in result:
                    entries.append(_decoded(result["KV"]))
        return entries

    def txn(self, ops: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One transaction; returns its results. Raises :class:`TxnFailed` (409) or :class:`TxnTooLarge` (413)."""
        try:
            status, _, body = self.call("PUT", "/v1/txn", data=json.dumps(ops))
        except TxnTooLarge as err:
            self._op_limit = err.limit
            raise
        if status == 409:
            errors = [(int(e.get("OpIndex", -1)), str(e.get("What", ""))) for e in (body or {}).get("Errors") or []]
            raise TxnFailed(errors)
        return list((body or {}).get("Results") or [])

    # -- sessions -----------------------------------------------------------------------------------------------

    def session_create(self, name: str, ttl: str, *, lock_delay: str = "15s", behavior: str = "release") -> str:
        body = json.dumps({"Name": name, "TTL": ttl, "LockDelay": lock_delay, "Behavior": behavior})
        _, _, answer = self.call("PUT", "/v1/session/create", data=body)
        return str(answer["ID"])

    def session_renew(self, session_id: str) -> bool:
        status, _, body = self.call("PUT", f"/v1/session/renew/{session_id}")
        return status == 200 and bool(body)

    def session_destroy(self, session_id: str) -> None:
        self.call("PUT", f"/v1/session/destroy/{session_id}")


def _decoded(entry: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(entry)
    value = entry.get("Value")
    out["Value"] = base64.b64decode(value) if value else b""
    return out


def txn_op_size(key: str, value_length: int) -> int:
    """The bytes one KV operation adds to a transaction's body, at most: JSON framing (verb, flags, index), the key
    (escaped, up to 6 bytes a character) and the value, base64-encoded."""
    return 120 + 6 * len(key) + 4 * ((value_length + 2) // 3)
