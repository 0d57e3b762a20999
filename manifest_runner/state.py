"""Values shared by the desired and the observed state: frozen, hashable, comparable (pure).

``==`` is the drift check: a desired :class:`ServiceSpec` and what the agent reports are compared through
:meth:`ServiceSpec.visible` and the registration hash kept in the service's meta.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

MANAGED_BY = "consul-manifest"
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
        body["Meta"] = {k: v for k, v in body["Meta"].items() if k != "manifest-hash"}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @property
    def owner(self) -> str | None:
        return dict(self.meta).get("manifest-owner")

    @property
    def recorded_digest(self) -> str | None:
        return dict(self.meta).get("manifest-hash")

    @property
    def managed(self) -> bool:
        return dict(self.meta).get("managed-by") == MANAGED_BY


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
class OwnershipRecord:
    """The KV keys one owner created, each with the ``CreateIndex`` Consul gave it.

    Services are marked in their own meta instead (they live on one agent; this record is global). Keeping the
    create index makes ownership exact: a key that someone deleted and created again has a new create index, so it
    is no longer ours, and prune will never delete it.

    Stored as JSON at ``consul-manifest/owners/<owner>``. Every key is claimed in the same transaction that creates
    it, so a crash can never leave a key we created unclaimed, nor claim a key we did not create:

    - an apply that fits in one transaction rewrites the record in it;
    - a larger apply writes, in each transaction but the last, a small *journal* entry
      (``consul-manifest/owners/<owner>.journal/<n>``) naming the keys it creates and deletes; the last transaction
      rewrites the record with everything and deletes the journal. A journal left by a crash is merged on reading
      and consolidated by the next apply.

    A key created by the transaction that writes the record or a journal entry cannot know its index yet: it is
    stored as 0, meaning "this record's (or journal entry's) own create/modify index", which is exact.
    ``modify_index`` 0 means the record does not exist yet; ``journals`` counts unconsolidated journal entries.
    """

    owner: str
    keys: Mapping[str, int] = field(default_factory=dict)
    modify_index: int = 0
    journals: int = 0

    def encode(self, created_now: frozenset[str] = frozenset()) -> bytes:
        keys = {key: 0 if key in created_now else index for key, index in self.keys.items()}
        document = {"keys": keys, "owner": self.owner, "version": 1}
        return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def decode(cls, owner: str, data: bytes | None, modify_index: int) -> OwnershipRecord:
        try:
            parsed = json.loads((data or b"{}").decode("utf-8"))
            raw = parsed.get("keys", {})
            keys = {str(k): int(v) or modify_index for k, v in raw.items()}
        except (ValueError, AttributeError, TypeError):
            keys = {}
        return cls(owner, keys, modify_index)

    def with_journal(self, data: bytes | None, create_index: int) -> OwnershipRecord:
        """This record with one journal entry applied (entries are applied in the order they were written)."""
        try:
            parsed = json.loads((data or b"{}").decode("utf-8"))
            created = [str(k) for k in parsed.get("created", [])]
            deleted = {str(k) for k in parsed.get("deleted", [])}
        except (ValueError, AttributeError, TypeError):
            created, deleted = [], set()
        keys = {k: v for k, v in self.keys.items() if k not in deleted}
        keys.update(dict.fromkeys(created, create_index))
        return OwnershipRecord(self.owner, keys, self.modify_index, self.journals + 1)


def journal_entry(created: list[str], deleted: list[str]) -> bytes:
    return json.dumps({"created": created, "deleted": deleted}, separators=(",", ":")).encode()


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


def kv_roots(keys: Any) -> tuple[str, ...]:
    """The fewest prefixes that cover ``keys``: each key's first path segment as a folder (``a/``), or the key."""
    roots = set()
    for key in keys:
        head, sep, _ = key.partition("/")
        roots.add(head + sep)
    return tuple(sorted(r for r in roots if not any(r != other and r.startswith(other) for other in roots)))
