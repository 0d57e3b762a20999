"""Consul's JSON answers -> typed values: the only module that reads what Consul sends.

Everything from Consul (or from whatever answers in its place) is untrusted: each decoder checks the shape it
needs and raises :class:`PayloadError` naming what is wrong; the client turns that into
:class:`~manifest_runner.errors.ConsulProtocolError` naming the operation (exit 4). Texts are kept as they are
(they may hold newlines or control characters): escaping them is the job of whoever writes them somewhere.

Pure: no I/O.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Status = Literal["passing", "warning", "critical"]


class PayloadError(ValueError):
    """An answer that is not what Consul sends; the message says what is wrong."""


class Headers(Protocol):
    """Response headers, looked up case-insensitively (``email.message.Message`` is one)."""

    def get(self, name: str) -> str | None: ...


# -- typed values ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Instance:
    """One instance of a service with its health, as a dependency or ``discover_service`` sees it."""

    id: str
    service: str
    address: str
    port: int
    node: str = ""
    datacenter: str = ""
    tags: tuple[str, ...] = ()
    meta: tuple[tuple[str, str], ...] = ()
    status: Status = "passing"
    weights: tuple[int, int] = (1, 1)

    @property
    def weight(self) -> int:
        return self.weights[0] if self.status == "passing" else self.weights[1] if self.status == "warning" else 0

    @property
    def host(self) -> str:
        """The address as it goes in a URL: IPv6 in brackets."""
        return f"[{self.address}]" if ":" in self.address and not self.address.startswith("[") else self.address

    def fields(self) -> dict[str, Any]:
        """What a dependency's ``format`` template may use."""
        return {
            "address": self.address,
            "host": self.host,
            "port": self.port,
            "id": self.id,
            "node": self.node,
            "datacenter": self.datacenter,
            "meta": dict(self.meta),
            "tags": ",".join(self.tags),
            "service": self.service,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "service": self.service,
            "address": self.address,
            "port": self.port,
            "node": self.node,
            "datacenter": self.datacenter,
            "tags": list(self.tags),
            "meta": dict(self.meta),
            "status": self.status,
            "weights": {"passing": self.weights[0], "warning": self.weights[1]},
        }

    @classmethod
    def from_json(cls, data: Any) -> Instance:
        """The inverse of :meth:`to_json` (for the on-disk cache); raises :class:`PayloadError` on any other shape."""
        doc = _object(data, "an instance")
        weights = _object(doc.get("weights") or {}, "weights")
        status = doc.get("status", "passing")
        if status not in ("passing", "warning", "critical"):
            raise PayloadError(f"unknown status {status!r}")
        return cls(
            id=_text(doc.get("id"), "id"),
            service=_text(doc.get("service", ""), "service"),
            address=_text(doc.get("address"), "address"),
            port=_port(doc.get("port")),
            node=_text(doc.get("node", ""), "node"),
            datacenter=_text(doc.get("datacenter", ""), "datacenter"),
            tags=_texts(doc.get("tags") or [], "tags"),
            meta=_text_map(doc.get("meta") or {}, "meta"),
            status=status,
            weights=(_count(weights.get("passing", 1), "weights"), _count(weights.get("warning", 1), "weights")),
        )


@dataclass(frozen=True, slots=True)
class AgentService:
    """A service as ``/v1/agent/services`` shows it."""

    id: str
    name: str
    address: str = ""
    port: int = 0
    tags: tuple[str, ...] = ()
    meta: tuple[tuple[str, str], ...] = ()
    weights: tuple[int, int] = (1, 1)
    enable_tag_override: bool = False
    tagged_addresses: tuple[tuple[str, str, int], ...] = ()
    """(tag, address, port), sorted by tag."""
    kind: str = ""
    """``connect-proxy`` for a sidecar, ``""`` for a typical service."""
    proxy_destination: str = ""
    """For a proxy: the id of the service it fronts."""


@dataclass(frozen=True, slots=True)
class KVPair:
    """One KV entry, its value decoded from base64."""

    key: str
    value: bytes = b""
    flags: int = 0
    create_index: int = 0
    modify_index: int = 0
    session: str | None = None


@dataclass(frozen=True, slots=True)
class AgentCheck:
    """A check as ``/v1/agent/checks`` shows it (Consul 1.8 shows no definition: id, type, name, notes)."""

    check_id: str
    service_id: str
    kind: str
    name: str = ""
    notes: str = ""
    status: str = ""


@dataclass(frozen=True, slots=True)
class AgentInfo:
    """What ``/v1/agent/self`` says of the agent this client talks to."""

    version: str
    node_name: str
    datacenter: str
    max_conns_per_client: int | None = None
    """``limits.http_max_conns_per_client`` (0: no limit); None when the agent does not say."""


# -- decoders -------------------------------------------------------------------------------------------------


def json_body(data: bytes) -> Any:
    """Parse a JSON body; anything else (an HTML error page, a truncated answer) is a :class:`PayloadError`."""
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as err:
        preview = data[:60].decode("utf-8", "replace")
        raise PayloadError(f"the body is not JSON ({type(err).__name__}): {preview!r}") from None


def consul_index(headers: Headers, *, required: bool) -> int:
    """The ``X-Consul-Index`` header: every Consul read that can block carries one. Missing where it is required,
    the server is not Consul (or a proxy stripped it)."""
    raw = headers.get("X-Consul-Index")
    if raw is None:
        if required:
            raise PayloadError("no X-Consul-Index header")
        return 0
    if not raw.isdigit() or len(raw) > 20:
        raise PayloadError(f"X-Consul-Index {raw[:30]!r} is not a number")
    return int(raw)


def agent_info(body: Any) -> AgentInfo:
    doc = _object(body, "/v1/agent/self")
    config = _object(doc.get("Config"), "Config")
    return AgentInfo(
        version=_text(config.get("Version", "0"), "Config.Version"),
        node_name=_text(config.get("NodeName", ""), "Config.NodeName"),
        datacenter=_text(config.get("Datacenter", ""), "Config.Datacenter"),
        max_conns_per_client=_conns_limit(doc.get("DebugConfig")),
    )


def _conns_limit(debug: Any) -> int | None:
    value = debug.get("HTTPMaxConnsPerClient") if isinstance(debug, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1_000_000 else None


def agent_services(body: Any) -> dict[str, AgentService]:
    services = {}
    for service_id, raw in _object(body, "the services map").items():
        doc = _object(raw, f"service {service_id!r}")
        services[_text(service_id, "service id")] = AgentService(
            id=_text(doc.get("ID", service_id), "ID"),
            name=_text(doc.get("Service", ""), "Service"),
            address=_text(doc.get("Address") or "", "Address"),
            port=_count(doc.get("Port") or 0, "Port"),
            tags=_texts(doc.get("Tags") or [], "Tags"),
            meta=_text_map(doc.get("Meta") or {}, "Meta"),
            weights=weights(doc.get("Weights")),
            enable_tag_override=_flag(doc.get("EnableTagOverride", False), "EnableTagOverride"),
            tagged_addresses=tagged_addresses(doc.get("TaggedAddresses")),
            kind=_text(doc.get("Kind") or "", "Kind"),
            proxy_destination=_text(
                _object(doc.get("Proxy") or {}, "Proxy").get("DestinationServiceID") or "", "DestinationServiceID"
            ),
        )
    return services


def tagged_addresses(raw: Any) -> tuple[tuple[str, str, int], ...]:
    """``TaggedAddresses`` of a service: {tag: {Address, Port}} -> sorted (tag, address, port)."""
    found = []
    for tag, value in _object(raw or {}, "TaggedAddresses").items():
        doc = _object(value, f"TaggedAddresses.{tag}")
        found.append(
            (
                _text(tag, "TaggedAddresses tag"),
                _text(doc.get("Address") or "", "Address"),
                _count(doc.get("Port") or 0, "Port"),
            )
        )
    return tuple(sorted(found))


@dataclass(frozen=True, slots=True)
class NodeServices:
    """``/v1/catalog/node/<node>``: a node, its address and meta, and its services."""

    node: str
    address: str
    meta: tuple[tuple[str, str], ...]
    services: dict[str, AgentService]


def catalog_node(body: Any) -> NodeServices | None:
    if body is None:
        return None
    doc = _object(body, "the node's services")
    node = _object(doc.get("Node"), "Node")
    return NodeServices(
        node=_text(node.get("Node") or "", "Node"),
        address=_text(node.get("Address") or "", "Address"),
        meta=_text_map(node.get("Meta") or {}, "Meta"),
        services=agent_services(doc.get("Services") or {}),
    )


def node_names(body: Any) -> list[str]:
    """``/v1/catalog/nodes``: the nodes' names."""
    return [_text(_object(item, "a node").get("Node"), "Node") for item in _list(body, "the nodes")]


def node_checks(body: Any) -> dict[str, AgentCheck]:
    """``/v1/health/node/<node>``: the node's checks by id (as the agent's checks)."""
    checks = {}
    for raw in _list(body, "the node's checks"):
        doc = _object(raw, "a check")
        check_id = _text(doc.get("CheckID"), "CheckID")
        checks[check_id] = AgentCheck(
            check_id=check_id,
            service_id=_text(doc.get("ServiceID") or "", "ServiceID"),
            kind=_text(doc.get("Type") or "", "Type"),
            name=_text(doc.get("Name") or "", "Name"),
            notes=_text(doc.get("Notes") or "", "Notes"),
            status=_text(doc.get("Status") or "", "Status"),
        )
    return checks


def agent_service(body: Any) -> AgentService:
    """``/v1/agent/service/<id>``: one service."""
    doc = _object(body, "the service")
    return agent_services({_text(doc.get("ID"), "ID"): doc})[_text(doc.get("ID"), "ID")]


def agent_checks(body: Any) -> dict[str, AgentCheck]:
    """``/v1/agent/checks``: the agent's checks by id."""
    checks = {}
    for check_id, raw in _object(body, "the checks map").items():
        doc = _object(raw, f"check {check_id!r}")
        checks[_text(check_id, "check id")] = AgentCheck(
            check_id=_text(doc.get("CheckID", check_id), "CheckID"),
            service_id=_text(doc.get("ServiceID") or "", "ServiceID"),
            kind=_text(doc.get("Type") or "", "Type"),
            name=_text(doc.get("Name") or "", "Name"),
            notes=_text(doc.get("Notes") or "", "Notes"),
            status=_text(doc.get("Status") or "", "Status"),
        )
    return checks


def weights(raw: Any) -> tuple[int, int]:
    """Consul's ``Weights`` object -> (passing, warning); absent means (1, 1)."""
    doc = _object(raw or {}, "Weights")
    return _count(doc.get("Passing", 1), "Weights.Passing"), _count(doc.get("Warning", 1), "Weights.Warning")


def status_of(checks: Sequence[Any]) -> Status:
    """An instance's health from its checks (node checks included): any critical (or unknown) status is critical,
    else any warning is warning, else passing."""
    statuses = {_text(_object(c, "a check").get("Status", "critical"), "Status") for c in checks}
    if "critical" in statuses or (statuses - {"passing", "warning"}):
        return "critical"
    return "warning" if "warning" in statuses else "passing"


def instances(body: Any, datacenter: str | None) -> list[Instance]:
    """``/v1/health/service/<name>`` -> instances; an empty service address is replaced by its node's."""
    found = []
    for raw in _list(body, "the health entries"):
        entry = _object(raw, "a health entry")
        service = _object(entry.get("Service"), "Service")
        node = _object(entry.get("Node") or {}, "Node")
        found.append(
            Instance(
                id=_text(service.get("ID"), "Service.ID"),
                service=_text(service.get("Service", ""), "Service.Service"),
                address=_text(service.get("Address") or node.get("Address") or "", "Address"),
                port=_count(service.get("Port") or 0, "Service.Port"),
                node=_text(node.get("Node", ""), "Node.Node"),
                datacenter=_text(node.get("Datacenter") or datacenter or "", "Node.Datacenter"),
                tags=_texts(service.get("Tags") or [], "Service.Tags"),
                meta=_text_map(service.get("Meta") or {}, "Service.Meta"),
                status=status_of(_list(entry.get("Checks") or [], "Checks")),
                weights=weights(service.get("Weights")),
            )
        )
    return found


def kv_pair(raw: Any) -> KVPair:
    doc = _object(raw, "a KV entry")
    value = doc.get("Value")
    session = doc.get("Session")
    return KVPair(
        key=_text(doc.get("Key"), "Key"),
        value=_base64(value) if value else b"",
        flags=_count(doc.get("Flags") or 0, "Flags"),
        create_index=_count(doc.get("CreateIndex") or 0, "CreateIndex"),
        modify_index=_count(doc.get("ModifyIndex") or 0, "ModifyIndex"),
        session=_text(session, "Session") if session else None,
    )


def kv_pairs(body: Any) -> list[KVPair]:
    return [kv_pair(raw) for raw in _list(body, "the KV entries")]


def kv_keys(body: Any) -> list[str]:
    return list(_texts(body, "the KV keys"))


def txn_results(body: Any) -> list[KVPair]:
    """The KV results of a transaction that succeeded (``Results``), in the order of the operations."""
    results = _object(body, "the transaction's answer").get("Results") or []
    pairs = []
    for raw in _list(results, "Results"):
        doc = _object(raw, "a transaction result")
        if "KV" in doc:
            pairs.append(kv_pair(doc["KV"]))
    return pairs


def txn_errors(body: Any) -> list[tuple[int, str]]:
    """``(op_index, what)`` of a transaction that was rolled back."""
    errors = _object(body or {}, "the transaction's answer").get("Errors") or []
    out = []
    for raw in _list(errors, "Errors"):
        doc = _object(raw, "a transaction error")
        index = doc.get("OpIndex", -1)
        out.append((index if isinstance(index, int) else -1, _text(doc.get("What", ""), "What")))
    return out


def session_id(body: Any) -> str:
    return _text(_object(body, "the session").get("ID"), "ID")


def text(body: Any, what: str) -> str:
    return _text(body, what)


def texts(body: Any, what: str) -> list[str]:
    return list(_texts(body, what))


def flag(body: Any, what: str) -> bool:
    return _flag(body, what)


def catalog_services(body: Any) -> dict[str, tuple[str, ...]]:
    """``/v1/catalog/services``: name -> tags."""
    return {_text(k, "a service name"): _texts(v or [], "tags") for k, v in _object(body, "services").items()}


def node_services(body: Any) -> dict[str, AgentService]:
    """``/v1/catalog/node-services/<node>``: the node's services by id (``null`` when the node is unknown)."""
    if body is None:
        return {}
    doc = _object(body, "the node's services")
    listed = _list(doc.get("Services") or [], "Services")
    return agent_services({_text(_object(s, "a service").get("ID"), "ID"): s for s in listed})


# -- shape checks ---------------------------------------------------------------------------------------------


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PayloadError(f"{what} is {_kind(value)}, not an object")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise PayloadError(f"{what} is {_kind(value)}, not a list")
    return value


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise PayloadError(f"{what} is {_kind(value)}, not text")
    return value


def _texts(value: Any, what: str) -> tuple[str, ...]:
    return tuple(_text(item, what) for item in _list(value, what))


def _text_map(value: Any, what: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((_text(k, what), _text(v, what)) for k, v in _object(value, what).items()))


def _count(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PayloadError(f"{what} is {_kind(value)}, not a whole number")
    return value


def _port(value: Any) -> int:
    port = _count(value, "port")
    if port > 65535:
        raise PayloadError(f"port {port} is out of range")
    return port


def _flag(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise PayloadError(f"{what} is {_kind(value)}, not true or false")
    return value


def _base64(value: Any) -> bytes:
    try:
        return base64.b64decode(_text(value, "Value"), validate=True)
    except binascii.Error:
        raise PayloadError("Value is not base64") from None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "text", bool: "a boolean"}.get(type(value), type(value).__name__)
