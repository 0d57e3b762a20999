"""Values shared by the desired and the observed state: frozen, hashable, comparable (pure).

``==`` is the drift check. A service carries, in its meta, a hash of the whole registration this owner last
applied and that registration's check definitions (Consul 1.8 shows a check's id, type, name and notes, never its
URL or interval): so a plan can say what changed field by field, checks included, and whether the manifest or
Consul moved. The ownership record of an owner's KV keys is in :mod:`.ownership`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from manifest_runner.converge.ownership import Origin, OwnershipRecord
from manifest_runner.marks import CHECKS_KEY, HASH_KEY, MANAGED_BY, MANAGED_BY_KEY, OWNER_KEY, is_internal_meta

KVMode = Literal["seed", "enforce"]
CHECKS_META_CHUNK = 500
CHECKS_META_CHUNKS = 8


def freeze(mapping: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((mapping or {}).items()))


def value_hash(data: bytes) -> str:
    """A short hash of a KV value's bytes: what the ownership record keeps of what it last wrote."""
    return hashlib.sha256(data).hexdigest()[:16]


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
        kinds = ("HTTP", "TCP", "GRPC", "TTL", "AliasService", "DockerContainerID", "H2PING", "Args")
        found = next((k for k in kinds if k in fields), "")
        return {"AliasService": "alias", "DockerContainerID": "docker", "Args": "script"}.get(found, found.lower())

    @property
    def label(self) -> str:
        """How a plan names the check: its kind and target, e.g. ``http http://127.0.0.1:8080/health``."""
        fields = self.fields()
        target = {"http": "HTTP", "tcp": "TCP", "grpc": "GRPC", "ttl": "TTL", "alias": "AliasService"}.get(self.kind)
        return f"{self.kind} {fields.get(target, '')}".strip() if target else self.check_id


@dataclass(frozen=True, slots=True)
class ObservedCheck:
    """A check as the agent shows it (no definition: Consul 1.8 does not show one)."""

    check_id: str
    kind: str
    name: str = ""
    notes: str = ""
    status: str = field(default="", compare=False)


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """A service registration: what the manifest wants, or what the agent has. For an observed one, ``checks`` are
    the definitions this owner last applied (from the service's meta, when it is ours) and ``seen_checks`` what the
    agent shows of its checks now."""

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
    seen_checks: tuple[ObservedCheck, ...] | None = None
    tagged_addresses: tuple[tuple[str, str, int], ...] = ()
    """(tag, address, port), sorted."""
    connect: str = ""
    """The registration's ``Connect`` object as canonical JSON (desired only: the agent does not show it; its hash
    is in the meta, which it does show)."""
    node: str = ""
    """An external node (registered through the catalog); "" for a service of the local agent."""
    node_address: str = ""
    node_meta: tuple[tuple[str, str], ...] = ()

    def visible(self) -> dict[str, Any]:
        """The fields ``/v1/agent/services`` shows, normalised the way the agent normalises them; meta without the
        runner's own bookkeeping."""
        return {
            "name": self.name,
            "address": self.address,
            "port": self.port,
            "tags": list(self.tags),
            "meta": {k: v for k, v in self.meta if not is_internal_meta(k)},
            "weights": {"passing": self.weights[0], "warning": self.weights[1]},
            "enable_tag_override": self.enable_tag_override,
            "tagged_addresses": {tag: f"{address}:{port}" for tag, address, port in self.tagged_addresses},
            **({"node": self.node, "node_address": self.node_address} if self.node else {}),
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
        if self.tagged_addresses:
            body["TaggedAddresses"] = {tag: {"Address": a, "Port": p} for tag, a, p in self.tagged_addresses}
        if self.connect:
            body["Connect"] = json.loads(self.connect)
        return body

    def catalog_service(self) -> dict[str, Any]:
        """The service as a catalog (``/v1/txn``) operation takes it, for an external node."""
        body = self.payload()
        body.pop("Checks")
        body.pop("Connect", None)
        body["Service"] = body.pop("Name")
        return body

    def digest(self) -> str:
        """A short hash of the registration (checks included), kept in the service meta to see drift cheaply."""
        body = self.payload()
        body.pop("Connect", None)  # not shown by the agent: its hash is in the meta
        body["Meta"] = {k: v for k, v in body["Meta"].items() if k != HASH_KEY and not k.startswith(CHECKS_KEY)}
        if self.node:
            body["Node"] = [self.node, self.node_address]
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


def checks_meta(checks: tuple[CheckSpec, ...]) -> dict[str, str]:
    """The check definitions as service meta, in chunks of at most 500 characters (Consul's limit is 512 a value);
    nothing when they would take more than eight (the plan then shows that checks changed, not how)."""
    text = json.dumps([c.payload() for c in checks], sort_keys=True, separators=(",", ":"))
    chunks = [text[i : i + CHECKS_META_CHUNK] for i in range(0, len(text), CHECKS_META_CHUNK)]
    if len(chunks) > CHECKS_META_CHUNKS:
        return {}
    return {CHECKS_KEY if i == 0 else f"{CHECKS_KEY}-{i + 1}": chunk for i, chunk in enumerate(chunks)}


def checks_from_meta(meta: Mapping[str, str]) -> tuple[CheckSpec, ...] | None:
    """The definitions :func:`checks_meta` kept; None when there are none (or they cannot be read)."""
    if CHECKS_KEY not in meta:
        return None
    text = "".join(meta.get(CHECKS_KEY if i == 0 else f"{CHECKS_KEY}-{i + 1}", "") for i in range(CHECKS_META_CHUNKS))
    try:
        parsed = json.loads(text)
        return tuple(
            CheckSpec.of(str(item["CheckID"]), {k: v for k, v in item.items() if k != "CheckID"})
            for item in parsed
            if isinstance(item, dict)
        )
    except (ValueError, KeyError, TypeError, RecursionError):
        return None


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
        """Equal bytes: a value another tool wrote (``consul kv put``, git2consul) with the same bytes is not drift,
        whatever its ``Flags`` (the plan notes a type marker that differs)."""
        return self.value == other.value

    @property
    def digest(self) -> str:
        return value_hash(self.value)


@dataclass(frozen=True, slots=True)
class DesiredState:
    """Everything one owner's manifests want in Consul, and where they come from."""

    owner: str
    services: tuple[ServiceSpec, ...] = ()
    kv: tuple[KVEntry, ...] = ()
    prune: bool = False
    origin: Origin | None = None

    @property
    def kv_roots(self) -> tuple[str, ...]:
        return kv_roots(entry.key for entry in self.kv)

    def fingerprint(self) -> str:
        """A hash of everything this state asks of Consul (for saved plans)."""
        document = {
            "owner": self.owner,
            "services": [s.payload() for s in self.services],
            "kv": [[e.key, e.value.hex(), e.flags, e.mode] for e in self.kv],
            "prune": self.prune,
        }
        return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ObservedState:
    """What Consul has that matters to one owner: its services on this agent, services whose ids the manifest
    wants (whoever owns them), the KV entries under the manifest's key roots and under recorded keys, and the
    ownership record."""

    owner: str
    services: Mapping[str, ServiceSpec] = field(default_factory=dict)
    kv: Mapping[str, KVEntry] = field(default_factory=dict)
    record: OwnershipRecord | None = None
    lock_seen_free: int | None = field(default=None, compare=False)
    """The owner's lock key as the observation found it, read before everything else: its ModifyIndex when it was
    free, 0 when it did not exist, None when it was held (or not read). If the key has not moved when the lock is
    taken, no other applier of this owner wrote anything since (each one takes and releases it), and the plan made
    from this observation still stands. Not part of the comparison nor of the fingerprint."""

    def owned_services(self) -> dict[str, ServiceSpec]:
        return {sid: s for sid, s in self.services.items() if s.managed and s.owner == self.owner}

    def fingerprint(self) -> str:
        """A hash of everything observed, indexes included: any change in Consul changes it (for saved plans)."""
        document = {
            "services": sorted(
                [sid, s.payload(), [[c.check_id, c.kind, c.name, c.notes] for c in s.seen_checks or ()]]
                for sid, s in self.services.items()
            ),
            "kv": sorted([k, e.value.hex(), e.flags, e.modify_index, e.create_index] for k, e in self.kv.items()),
            "record": None if self.record is None else [self.record.modify_index, self.record.journals],
        }
        return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()


def kv_roots(keys: Iterable[str]) -> tuple[str, ...]:
    """The fewest prefixes that cover ``keys``: each key's first path segment as a folder (``a/``), or the key."""
    roots = set()
    for key in keys:
        head, sep, _ = key.partition("/")
        roots.add(head + sep)
    return tuple(sorted(r for r in roots if not any(r != other and r.startswith(other) for other in roots)))
