"""plan(desired, observed, policy) -> Plan: exactly what apply will do, as a value (pure, deterministic order).

Rules, in one place:

- a service is created when its id is absent, updated when what the agent shows or the registration hash differs,
  and is a **conflict** when its id exists but is not this owner's (never overwritten);
- a ``seed`` key is created when absent and otherwise left alone (an operator's later change is kept);
- an ``enforce`` key is created when absent, rewritten when it differs and is ours, and is a **conflict** when it
  exists and is not ours;
- a key is ours when the ownership record names it with the create index it has now;
- with prune (or destroy), this owner's services on this agent and its recorded keys that are no longer declared
  are deleted, with compare-and-set on their index;
- the record is rewritten only when the set of owned keys changes.

A plan with conflicts is not applied at all.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from manifest_runner.consul import kvcodec
from manifest_runner.converge.ownership import OwnershipRecord
from manifest_runner.converge.state import DesiredState, KVEntry, ObservedState, ServiceSpec
from manifest_runner.marks import HASH_KEY

Op = Literal["create", "update", "delete", "conflict"]
Kind = Literal["service", "kv"]


@dataclass(frozen=True, slots=True)
class PlanPolicy:
    """How to plan: ``prune`` deletes what is no longer declared; ``destroy`` deletes everything the owner has;
    ``prune_services`` prunes the owner's services on this agent only (``run``: the runner is the authority for
    its instance's registrations, while shared KV keys are pruned only when asked)."""

    prune: bool = False
    destroy: bool = False
    prune_services: bool = False


@dataclass(frozen=True, slots=True)
class Change:
    field: str
    old: Any
    new: Any


@dataclass(frozen=True, slots=True)
class Action:
    op: Op
    kind: Kind
    target: str
    reason: str
    changes: tuple[Change, ...] = ()
    service: ServiceSpec | None = None
    entry: KVEntry | None = None
    index: int = 0
    """For KV writes and deletes: the compare-and-set index (0: create only if absent)."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": self.op, "kind": self.kind, "target": self.target, "reason": self.reason}
        if self.changes:
            out["changes"] = [{"field": c.field, "old": c.old, "new": c.new} for c in self.changes]
        return out


@dataclass(frozen=True, slots=True)
class Plan:
    owner: str
    actions: tuple[Action, ...] = ()
    record_before: OwnershipRecord | None = None
    record_after: Mapping[str, int] = field(default_factory=dict)
    """The owned keys once applied: key -> create index (0 for keys this apply creates)."""
    forgotten: tuple[str, ...] = ()
    """Recorded keys that no longer exist or were re-created by someone else: dropped from the record."""

    @property
    def conflicts(self) -> tuple[Action, ...]:
        return tuple(a for a in self.actions if a.op == "conflict")

    @property
    def record_changes(self) -> bool:
        """Whether the record must be rewritten: its keys change, or a journal is left to consolidate."""
        if self.record_before is None:
            return bool(self.record_after)
        return set(self.record_before.keys) != set(self.record_after) or self.record_before.journals > 0

    @property
    def has_changes(self) -> bool:
        return bool(self.actions) or self.record_changes

    def counts(self) -> dict[str, int]:
        counts = {"create": 0, "update": 0, "delete": 0, "conflict": 0}
        for action in self.actions:
            counts[action.op] += 1
        return counts

    def to_json(self) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "changes": self.has_changes,
            "counts": self.counts(),
            "actions": [a.to_json() for a in self.actions],
            "forget": list(self.forgotten),
        }


def owned_keys(observed: ObservedState) -> dict[str, int]:
    """Recorded keys that still exist with the create index the record remembers."""
    if observed.record is None:
        return {}
    return {
        key: index
        for key, index in observed.record.keys.items()
        if key in observed.kv and observed.kv[key].create_index == index
    }


DEFAULT_POLICY = PlanPolicy()


def plan(desired: DesiredState, observed: ObservedState, policy: PlanPolicy = DEFAULT_POLICY) -> Plan:
    prune = policy.prune or policy.destroy or desired.prune
    wanted_services = () if policy.destroy else desired.services
    wanted_kv = () if policy.destroy else desired.kv
    mine = owned_keys(observed)
    record_keys = dict(mine)
    actions: list[Action] = []

    for entry in wanted_kv:
        actions.extend(_kv_actions(entry, observed.kv.get(entry.key), entry.key in mine, record_keys))
    declared = {entry.key for entry in wanted_kv}
    if prune:
        for key in sorted(set(mine) - declared):
            existing = observed.kv[key]
            actions.append(
                Action(
                    "delete",
                    "kv",
                    key,
                    "destroy" if policy.destroy else "no longer declared",
                    index=existing.modify_index,
                )
            )
            record_keys.pop(key, None)

    for spec in wanted_services:
        actions.extend(_service_actions(spec, observed.services.get(spec.service_id), desired.owner))
    if prune or policy.prune_services:
        declared_ids = {spec.service_id for spec in wanted_services}
        for service_id, registered in sorted(observed.owned_services().items()):
            if service_id not in declared_ids:
                reason = "destroy" if policy.destroy else "no longer declared"
                actions.append(Action("delete", "service", service_id, reason, service=registered))

    recorded = set(observed.record.keys) if observed.record else set()
    return Plan(
        owner=desired.owner,
        actions=tuple(_ordered(actions)),
        record_before=observed.record,
        record_after=record_keys,
        forgotten=tuple(sorted(recorded - set(mine))),
    )


def _kv_actions(entry: KVEntry, found: KVEntry | None, ours: bool, record_keys: dict[str, int]) -> list[Action]:
    if found is None:
        record_keys[entry.key] = 0
        new = _shown(entry)
        return [
            Action(
                "create",
                "kv",
                entry.key,
                f"{entry.mode} key absent",
                (Change("value", None, new),),
                entry=entry,
                index=0,
            )
        ]
    if entry.mode == "seed":
        return []  # present: an operator's value is kept, whoever created the key
    if not ours:
        return [Action("conflict", "kv", entry.key, "exists and was not created by this owner", entry=entry)]
    if entry.same_content(found):
        return []
    return [
        Action(
            "update",
            "kv",
            entry.key,
            "drift",
            (Change("value", _shown(found), _shown(entry)),),
            entry=entry,
            index=found.modify_index,
        )
    ]


def _service_actions(spec: ServiceSpec, found: ServiceSpec | None, owner: str) -> list[Action]:
    if found is None:
        return [Action("create", "service", spec.service_id, "absent", service=spec)]
    if not (found.managed and found.owner == owner):
        holder = f"owner {found.owner!r}" if found.managed else "someone else (not managed by consul-manifest)"
        return [Action("conflict", "service", spec.service_id, f"id is registered by {holder}", service=spec)]
    changes = service_changes(found, spec)
    if not changes:
        return []
    return [Action("update", "service", spec.service_id, "drift", tuple(changes), service=spec)]


def service_changes(found: ServiceSpec, spec: ServiceSpec) -> list[Change]:
    """What differs between the agent's registration and the desired one, field by field."""
    old, new = found.visible(), spec.visible()
    old_meta = {k: v for k, v in old.pop("meta").items() if k != HASH_KEY}
    new_meta = {k: v for k, v in new.pop("meta").items() if k != HASH_KEY}
    changes = [Change(name, old[name], new[name]) for name in new if old[name] != new[name]]
    for key in sorted(set(old_meta) | set(new_meta)):
        if old_meta.get(key) != new_meta.get(key):
            changes.append(Change(f"meta.{key}", old_meta.get(key), new_meta.get(key)))
    if not changes and found.recorded_digest != spec.recorded_digest:
        changes.append(Change("checks", found.recorded_digest, spec.recorded_digest))
    return changes


_ORDER = {
    ("kv", "conflict"): 0,
    ("service", "conflict"): 0,
    ("kv", "create"): 1,
    ("kv", "update"): 1,
    ("kv", "delete"): 1,
    ("service", "create"): 2,
    ("service", "update"): 2,
    ("service", "delete"): 3,
}


def _ordered(actions: list[Action]) -> list[Action]:
    """Conflicts first; then KV (configuration before the service is discoverable); registrations; removals."""
    return sorted(actions, key=lambda a: (_ORDER[(a.kind, a.op)], a.target))


def _shown(entry: KVEntry) -> Any:
    """A KV value as the plan shows it: decoded with its type, truncated when long."""
    value = kvcodec.decode(entry.value, entry.flags)
    if value is None:
        return f"<{len(entry.value)} bytes of binary>"
    if len(entry.value) <= 200:
        return value
    text = value if isinstance(value, str) else json.dumps(value)
    return text[:197] + "..." if len(text) > 200 else value
