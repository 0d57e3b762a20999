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
from collections.abc import Iterable, Mapping
from typing import Any

from manifest_runner.config import ConsulConfig
from manifest_runner.consul import payloads
from manifest_runner.consul.base import LEADER, Freshness
from manifest_runner.consul.kv import TXN_BODY_LIMIT, KVCalls, txn_op_size
from manifest_runner.consul.payloads import AgentCheck, AgentService, Instance, NodeServices
from manifest_runner.consul.statuses import CheckNotFound, TxnFailed, TxnTooLarge
from manifest_runner.errors import ConsulProtocolError, ConsulRequestError

__all__ = ["TXN_BODY_LIMIT", "CheckNotFound", "ConsulClient", "TxnFailed", "TxnTooLarge", "txn_op_size"]


class ConsulClient(KVCalls):
    """Typed access to the parts of Consul's HTTP API this project uses. Thread-safe (a shared connection pool).

    ``transport`` replaces the HTTP transport (tests use a scripted one at this seam); by default one is built from
    the settings."""

    @classmethod
    def from_env(cls, **flags: Any) -> ConsulClient:
        return cls(ConsulConfig.from_sources(flags))

    # -- agent ------------------------------------------------------------------------------------------------

    def agent_services(self, filter_expr: str | None = None) -> dict[str, AgentService]:
        params = [("filter", filter_expr)] if filter_expr else []
        _, services = self.read("GET", "/v1/agent/services", payloads.agent_services, params)
        return services or {}

    def agent_service(self, service_id: str) -> AgentService | None:
        """One service of this agent, read directly: None when absent. Unlike the list, which Consul filters by the
        token's rights without a word, a service the token may not read is a refusal (403) here."""
        _, service = self.read("GET", f"/v1/agent/service/{service_id}", payloads.agent_service, absent_ok=True)
        return service

    def catalog_node(self, node: str) -> NodeServices | None:
        """A node of the catalog with its services; None when there is no such node."""
        _, found = self.read("GET", f"/v1/catalog/node/{node}", payloads.catalog_node, absent_ok=True)
        return found

    def catalog_nodes(self, node_meta: str) -> list[str]:
        """The names of the nodes whose meta has ``key:value``."""
        _, names = self.read("GET", "/v1/catalog/nodes", payloads.node_names, [("node-meta", node_meta)])
        return names or []

    def node_checks(self, node: str) -> dict[str, AgentCheck]:
        _, checks = self.read("GET", f"/v1/health/node/{node}", payloads.node_checks)
        return checks or {}

    def agent_checks(self) -> dict[str, AgentCheck]:
        _, checks = self.read("GET", "/v1/agent/checks", payloads.agent_checks)
        return checks or {}

    def register_service(self, payload: Mapping[str, Any]) -> None:
        self.send(
            "PUT",
            "/v1/agent/service/register",
            [("replace-existing-checks", "true")],
            json.dumps(payload),
            idempotent=True,  # the same registration twice is the same registration
        )

    def deregister_service(self, service_id: str) -> None:
        self.send("PUT", f"/v1/agent/service/deregister/{service_id}", idempotent=True)

    def update_ttl(self, check_id: str, status: str, output: str = "") -> None:
        """Report a TTL check's status: ``passing``, ``warning`` or ``critical``."""
        body = json.dumps({"Status": status, "Output": output[:4096]})
        try:
            answer = self.send("PUT", f"/v1/agent/check/update/{check_id}", data=body, idempotent=True)
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
        freshness: Freshness = LEADER,
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
            freshness=freshness,
        )
        return found, items or []

    # -- sessions -----------------------------------------------------------------------------------------------

    def session_create(self, name: str, ttl: str, *, lock_delay: str = "15s", behavior: str = "release") -> str:
        body = json.dumps({"Name": name, "TTL": ttl, "LockDelay": lock_delay, "Behavior": behavior})
        _, session = self.read("PUT", "/v1/session/create", payloads.session_id, data=body)
        if session is None:
            raise ConsulProtocolError("no session was created", operation="PUT /v1/session/create", status=404)
        return session

    def session_renew(self, session_id: str) -> bool:
        _, renewed = self.read(
            "PUT", f"/v1/session/renew/{session_id}", lambda body: body, idempotent=True, absent_ok=True
        )
        return renewed is not None and bool(renewed)

    def session_destroy(self, session_id: str) -> None:
        self.send("PUT", f"/v1/session/destroy/{session_id}", idempotent=True)
