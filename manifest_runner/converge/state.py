"""Values shared by the desired and the observed state: frozen, hashable, comparable (pure).

``==`` is the drift check: a desired :class:`ServiceSpec` and what the agent reports are compared through
:meth:`ServiceSpec.visible` and the registration hash kept in the service's meta. The ownership record of an owner's
KV keys is in :mod:`.ownership`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from manifest_runner.converge.ownership import OwnershipRecord
from manifest_runner.marks import HASH_KEY, MANAGED_BY, MANAGED_BY_KEY, OWNER_KEY

KVMode = Literal["seed", "enforce"]


def freeze(mapping: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((mapping or {}).items()))


@dataclass(frozen=True, slots=True)
class CheckSpec:
    """One health check as the agent API takes it (field names are Consul's)."""

    check_id: str
    definition: str
    """Consul's check fields (``HTTP``, ``Interval``...) as canonical JSON: hashable, comparable, exact."""
    heartbeat: Any = None
    """For TTL checks kept alive by ``run``: the manifest's Heartbeat model (not sent to Consul)."""

    @classmethod
    def of(cls, check_id: str, fields: Mapping[str, Any], heartbeat: Any = None) -> CheckSpec:
        return cls(check_id, json.dumps(dict(fields), sort_keys=True, separators=(",", ":")), heartbeat)

    def fields(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.definition)
        return parsed

    def payload(self) -> dict[str, Any]:
        return {"CheckID": self.check_id, **self.fields()}

    @property
    def kind(self) -> str:
        fields = self.fields()
        return next((k.lower() for k in ("HTTP", "TCP", "GRPC", "TTL") if k in fields), "unknown")


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """A service registration: what the manifest wants, or what the agent has (then ``checks`` are unknown)."""

    service_id: str
    name: str
    address: str = ""
    port: int = 0
    tags: tuple[str, ...] = ()
    meta: tuple[tuple[str, str], ...] = ()
    weights: tuple[int, int] = (1, 1)
    enable_tag_override: bool = False
    checks: tuple[CheckSpec, ...] = ()
    on_exit: Literal["deregister", "keep"] = "deregister"

    def visible(self) -> dict[str, Any]:
        """The fields ``/v1/agent/services`` shows, normalised the way the agent normalises them."""
        return {
            "name": self.name,
            "address": self.address,
            "port": self.port,
            "tags": list(self.tags),
            "meta": dict(self.meta),
            "weights": {"passing": self.weights[0], "warning": self.weights[1]},
            "enable_tag_override": self.enable_tag_override,
        }

    def payload(self) -> dict[str, Any]:
        """The body of ``PUT /v1/agent/service/register``."""
        body: dict[str, Any] = {
            "ID": self.service_id,
            "Name": self.name,
            "Tags": list(self.tags),
            "Meta": dict(self.meta),
            "Port": self.port,
            "Weights": {"Passing": self.weights[0], "Warning": self.weights[1]},
            "EnableTagOverride": self.enable_tag_override,
            "Checks": [check.payload() for check in self.checks],
        }
        if self.address:
            body["Address"] = self.address
        return body

    def digest(self) -> str:
        """A short hash of the registration (checks included), kept in the service meta to see drift cheaply."""
        body = self.payload()
        body["Meta"] = {k: v for k, v in body["Meta"].items() if k != HASH_KEY}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @property
    def owner(self) -> str | None:
        return dict(self.meta).get(OWNER_KEY)

    @property
    def recorded_digest(self) -> str | None:
        return dict(self.meta).get(HASH_KEY)

    @property
    def managed(self) -> bool:
        return dict(self.meta).get(MANAGED_BY_KEY) == MANAGED_BY


@dataclass(frozen=True, slots=True)
class KVEntry:
    """A KV key: desired (``mode`` set, indexes 0) or observed (``mode`` None, Consul's real indexes)."""

    key: str
    value: bytes
    flags: int = 0
    mode: KVMode | None = None
    modify_index: int = 0
    create_index: int = 0

    def same_content(self, other: KVEntry) -> bool:
        return self.value == other.value and self.flags == other.flags


@dataclass(frozen=True, slots=True)
class DesiredState:
    """Everything one owner's manifests want in Consul."""

    owner: str
    services: tuple[ServiceSpec, ...] = ()
    kv: tuple[KVEntry, ...] = ()
    prune: bool = False

    @property
    def kv_roots(self) -> tuple[str, ...]:
        return kv_roots(entry.key for entry in self.kv)


@dataclass(frozen=True, slots=True)
class ObservedState:
    """What Consul has that matters to one owner: its services on this agent, services whose ids the manifest
    wants (whoever owns them), the KV entries under the manifest's key roots and under recorded keys, and the
    ownership record."""

    owner: str
    services: Mapping[str, ServiceSpec] = field(default_factory=dict)
    kv: Mapping[str, KVEntry] = field(default_factory=dict)
    record: OwnershipRecord | None = None

    def owned_services(self) -> dict[str, ServiceSpec]:
        return {sid: s for sid, s in self.services.items() if s.managed and s.owner == self.owner}


def kv_roots(keys: Iterable[str]) -> tuple[str, ...]:
    """The fewest prefixes that cover ``keys``: each key's first path segment as a folder (``a/``), or the key."""
    roots = set()
    for key in keys:
        head, sep, _ = key.partition("/")
        roots.add(head + sep)
    return tuple(sorted(r for r in roots if not any(r != other and r.startswith(other) for other in roots)))
