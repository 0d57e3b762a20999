"""plan(desired, observed, policy) -> Plan: exactly what apply will do, as a value (pure, deterministic order).

Rules, in one place:

- a service is created when its id is absent, updated when what the agent shows, its checks, or the registration
  hash differ, and is a **conflict** when its id exists and is not this owner's (``--adopt`` takes over an unowned
  one that already equals the manifest);
- a ``seed`` key is created when absent and otherwise left alone (an operator's later change is kept);
- an ``enforce`` key is created when absent, rewritten when its bytes differ and it is ours, and is a **conflict**
  when it exists and is not ours (``--adopt`` claims it when its bytes equal the manifest's);
- a key is ours when the ownership record names it with the create index it has now;
- with prune (or destroy), this owner's services on this agent and its recorded keys that are no longer declared
  are deleted, with compare-and-set on their index; without prune they are listed as kept;
- an owner applied from another origin (repository and folder) is a conflict, unless ``--take-over``;
- the record is rewritten when the owned keys, what was last applied to them, or the origin change.

Every change says what moved: the manifest (``manifest``), Consul (``drift``), or both. A plan with conflicts is
not applied at all.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from manifest_runner.consul import kvcodec
from manifest_runner.converge.ownership import Origin, OwnershipRecord
from manifest_runner.converge.state import (
    CheckSpec,
    DesiredState,
    KVEntry,
    ObservedState,
    ServiceSpec,
    checks_from_meta,
)

Op = Literal["create", "update", "delete", "conflict", "adopt"]
Kind = Literal["service", "kv", "owner"]
Cause = Literal["manifest", "drift", "manifest and drift", "unknown", ""]


@dataclass(frozen=True, slots=True)
class PlanPolicy:
    """How to plan: ``prune`` deletes what is no longer declared; ``destroy`` deletes everything the owner has;
    ``prune_services`` prunes the owner's services on this agent only (``run``: the runner is the authority for
    its instance's registrations, while shared KV keys are pruned only when asked); ``adopt`` takes ownership of
    unowned items that equal the manifest; ``take_over`` moves the owner to this origin."""

    prune: bool = False
    destroy: bool = False
    prune_services: bool = False
    adopt: bool = False
    take_over: bool = False


@dataclass(frozen=True, slots=True)
class Change:
    field: str
    old: Any
    new: Any
    cause: Cause = ""


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
    cause: Cause = ""
    found: ServiceSpec | None = field(default=None, compare=False)
    """For a service update: what Consul has now (its checks, for a catalog registration)."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"op": self.op, "kind": self.kind, "target": self.target, "reason": self.reason}
        if self.cause:
            out["cause"] = self.cause
        if self.changes:
            out["changes"] = [
                {"field": c.field, "old": c.old, "new": c.new, **({"cause": c.cause} if c.cause else {})}
                for c in self.changes
            ]
        return out


@dataclass(frozen=True, slots=True)
class Plan:
    owner: str
    actions: tuple[Action, ...] = ()
    record_before: OwnershipRecord | None = None
    record_after: Mapping[str, int] = field(default_factory=dict)
    """The owned keys once applied: key -> create index (0 for keys this apply creates)."""
    applied_after: Mapping[str, str] = field(default_factory=dict)
    """The hash of what this owner will have last applied to each of its keys."""
    forgotten: tuple[str, ...] = ()
    """Recorded keys that no longer exist or were re-created by someone else: dropped from the record."""
    kept: tuple[tuple[Kind, str], ...] = ()
    """This owner's items no longer declared, left in place because nothing asked to prune them."""
    notes: tuple[str, ...] = ()
    """Things a reviewer should know that change nothing (a value equal but for its type marker)."""
    origin: Origin | None = None
    """The origin the record will name."""

    @property
    def conflicts(self) -> tuple[Action, ...]:
        return tuple(a for a in self.actions if a.op == "conflict")

    @property
    def record_changes(self) -> bool:
        """Whether the record must be rewritten: its keys, their last-applied values or the origin change, an old
        record must be upgraded, or a journal is left to consolidate."""
        before = self.record_before
        if before is None:
            return bool(self.record_after) or self.origin is not None
        return (
            set(before.keys) != set(self.record_after)
            or dict(before.applied) != dict(self.applied_after)
            or before.origin != self.origin
            or before.journals > 0
            or before.version < 2
        )

    @property
    def has_changes(self) -> bool:
        return bool(self.actions) or self.record_changes

    def counts(self) -> dict[str, int]:
        counts = {"create": 0, "update": 0, "delete": 0, "adopt": 0, "conflict": 0}
        for action in self.actions:
            counts[action.op] += 1
        counts["kept"] = len(self.kept)
        return counts

    def to_json(self) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "changes": self.has_changes,
            "counts": self.counts(),
            "actions": [a.to_json() for a in self.actions],
            "kept": [{"kind": kind, "target": target} for kind, target in self.kept],
            "notes": list(self.notes),
            "forget": list(self.forgotten),
            "origin": self.origin.to_json() if self.origin else None,
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


@dataclass
class _Builder:
    desired: DesiredState
    observed: ObservedState
    policy: PlanPolicy
    actions: list[Action] = field(default_factory=list)
    record_keys: dict[str, int] = field(default_factory=dict)
    applied: dict[str, str] = field(default_factory=dict)
    kept: list[tuple[Kind, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def plan(desired: DesiredState, observed: ObservedState, policy: PlanPolicy = DEFAULT_POLICY) -> Plan:
    record = observed.record
    conflict = _origin_conflict(desired, record, policy)
    if conflict is not None:
        return Plan(
            owner=desired.owner, actions=(conflict,), record_before=record, origin=record.origin if record else None
        )
    mine = owned_keys(observed)
    build = _Builder(desired, observed, policy, record_keys=dict(mine))
    build.applied = {k: v for k, v in (record.applied if record else {}).items() if k in mine}
    _plan_kv(build, mine)
    _plan_services(build)
    recorded = set(record.keys) if record else set()
    keep_record = bool(build.record_keys) or (bool(desired.services and desired.origin) and not policy.destroy)
    origin = desired.origin if desired.origin is not None else (record.origin if record else None)
    return Plan(
        owner=desired.owner,
        actions=tuple(_ordered(build.actions)),
        record_before=record,
        record_after=build.record_keys,
        applied_after=build.applied,
        forgotten=tuple(sorted(recorded - set(mine))),
        kept=tuple(sorted(build.kept)),
        notes=tuple(build.notes),
        origin=origin if keep_record else None,
    )


def _origin_conflict(desired: DesiredState, record: OwnershipRecord | None, policy: PlanPolicy) -> Action | None:
    if record is None or record.origin is None or desired.origin is None or policy.take_over:
        return None
    if record.origin == desired.origin or (policy.destroy and record.origin.repo == desired.origin.repo):
        return None
    return Action(
        "conflict",
        "owner",
        desired.owner,
        f"owner {desired.owner!r} is applied from {record.origin}, and this manifest is at {desired.origin}: two "
        "places cannot share an owner. Give one of them another owner, or pass --take-over to move the owner here",
    )


def _plan_kv(build: _Builder, mine: dict[str, int]) -> None:
    policy, observed = build.policy, build.observed
    wanted = () if policy.destroy else build.desired.kv
    prune = policy.prune or policy.destroy or build.desired.prune
    for entry in wanted:
        build.actions.extend(_kv_actions(build, entry, observed.kv.get(entry.key), entry.key in mine))
    declared = {entry.key for entry in wanted}
    for key in sorted(set(mine) - declared):
        if not prune:
            build.kept.append(("kv", key))
            continue
        reason = "destroy" if policy.destroy else "no longer declared"
        build.actions.append(Action("delete", "kv", key, reason, index=observed.kv[key].modify_index, cause="manifest"))
        build.record_keys.pop(key, None)
        build.applied.pop(key, None)


def _kv_actions(build: _Builder, entry: KVEntry, found: KVEntry | None, ours: bool) -> list[Action]:
    last = build.applied.get(entry.key)
    if found is None:
        build.record_keys[entry.key] = 0
        build.applied[entry.key] = entry.digest
        cause: Cause = "drift" if ours or last else "manifest"
        reason = "deleted in Consul" if cause == "drift" else f"{entry.mode} key absent"
        change = Change("value", None, _shown(entry))
        return [Action("create", "kv", entry.key, reason, (change,), entry=entry, index=0, cause=cause)]
    if entry.mode == "seed":
        if not ours and build.policy.adopt and entry.same_content(found):
            return [_adopt_key(build, entry, found)]
        return []  # present: an operator's value is kept, whoever created the key
    if not ours:
        if build.policy.adopt and entry.same_content(found):
            return [_adopt_key(build, entry, found)]
        return [
            Action(
                "conflict",
                "kv",
                entry.key,
                "exists and was not created by this owner: remove it from the manifest, delete it in Consul, or "
                "apply with --adopt once it holds the manifest's value",
                entry=entry,
            )
        ]
    if entry.same_content(found):
        build.applied[entry.key] = entry.digest
        if found.flags != entry.flags:
            build.notes.append(f"kv {entry.key}: the same bytes, with another type marker (Flags): left as it is")
        return []
    build.applied[entry.key] = entry.digest
    cause = _cause(manifest=last != entry.digest, drift=last != found.digest if last else None)
    change = Change("value", _shown(found), _shown(entry), cause)
    return [
        Action(
            "update",
            "kv",
            entry.key,
            _REASONS.get(cause, "differs"),
            (change,),
            entry=entry,
            index=found.modify_index,
            cause=cause,
        )
    ]


_REASONS = {"manifest": "manifest changed", "drift": "drift", "manifest and drift": "manifest changed, and drift"}


def _adopt_key(build: _Builder, entry: KVEntry, found: KVEntry) -> Action:
    build.record_keys[entry.key] = found.create_index
    build.applied[entry.key] = entry.digest
    return Action("adopt", "kv", entry.key, "unowned and equal to the manifest: claimed", entry=entry, cause="manifest")


def _cause(*, manifest: bool, drift: bool | None) -> Cause:
    if drift is None:
        return "manifest" if manifest else "unknown"
    if manifest and drift:
        return "manifest and drift"
    return "manifest" if manifest else "drift" if drift else "unknown"


def _plan_services(build: _Builder) -> None:
    policy, observed, desired = build.policy, build.observed, build.desired
    wanted = () if policy.destroy else desired.services
    for spec in wanted:
        build.actions.extend(_service_actions(spec, observed.services.get(spec.service_id), desired.owner, policy))
    declared_ids = {spec.service_id for spec in wanted}
    prune = policy.prune or policy.destroy or desired.prune or policy.prune_services
    for service_id, registered in sorted(observed.owned_services().items()):
        if service_id in declared_ids:
            continue
        if not prune:
            build.kept.append(("service", service_id))
            continue
        reason = "destroy" if policy.destroy else "no longer declared"
        build.actions.append(Action("delete", "service", service_id, reason, service=registered, cause="manifest"))


def _service_actions(spec: ServiceSpec, found: ServiceSpec | None, owner: str, policy: PlanPolicy) -> list[Action]:
    if found is None:
        return [Action("create", "service", spec.service_id, "absent", service=spec, cause="manifest")]
    if not (found.managed and found.owner == owner):
        if policy.adopt and not found.managed and not service_changes(found, spec, unowned=True):
            return [
                Action(
                    "adopt",
                    "service",
                    spec.service_id,
                    "unowned and equal to the manifest: claimed",
                    service=spec,
                    cause="manifest",
                )
            ]
        holder = f"owner {found.owner!r}" if found.managed else "someone else (not managed by consul-manifest)"
        hint = "" if found.managed else "; --adopt takes it over once it equals the manifest"
        return [Action("conflict", "service", spec.service_id, f"id is registered by {holder}{hint}", service=spec)]
    changes = service_changes(found, spec)
    if not changes:
        return []
    causes = {c.cause for c in changes}
    cause: Cause = (
        "manifest and drift"
        if {"manifest", "drift"} <= causes
        else "drift"
        if "drift" in causes
        else ("manifest" if "manifest" in causes else "unknown")
    )
    reason = {"manifest": "manifest changed", "drift": "drift"}.get(cause, "manifest changed, and drift")
    return [
        Action("update", "service", spec.service_id, reason, tuple(changes), service=spec, cause=cause, found=found)
    ]


def service_changes(found: ServiceSpec, spec: ServiceSpec, *, unowned: bool = False) -> list[Change]:
    """What differs between the agent's registration and the desired one, field by field, checks included, each
    with its cause. ``unowned``: compare a service that is not ours (for adopt): our marks are not expected."""
    applied = checks_from_meta(dict(found.meta))
    recorded = found.recorded_digest
    # Consul moved when what it has now (its visible fields, the checks last applied) no longer hashes to the hash
    # recorded at the last apply; the manifest moved when the desired registration does not either
    consul_moved = found.digest() != recorded if recorded and applied is not None else None
    manifest_moved = spec.recorded_digest != recorded if recorded else None
    visible_cause: Cause = (
        "manifest"
        if consul_moved is False
        else "drift"
        if manifest_moved is False
        else "unknown"
        if consul_moved is None
        else "manifest and drift"
    )
    old, new = found.visible(), spec.visible()
    old_meta, new_meta = old.pop("meta"), new.pop("meta")
    if unowned:
        new_meta = {k: v for k, v in new_meta.items() if k not in ("managed-by", "manifest-owner")}
    changes = [Change(name, old[name], new[name], visible_cause) for name in new if old[name] != new[name]]
    for key in sorted(set(old_meta) | set(new_meta)):
        if old_meta.get(key) != new_meta.get(key):
            changes.append(Change(f"meta.{key}", old_meta.get(key), new_meta.get(key), visible_cause))
    changes.extend(_check_changes(found, spec, None if unowned else applied))
    if not changes and not unowned and found.recorded_digest != spec.recorded_digest:
        changes.append(Change("registration", "as last applied", "changed (details were not kept)", "manifest"))
    return changes


def _check_changes(found: ServiceSpec, spec: ServiceSpec, applied_checks: tuple[CheckSpec, ...] | None) -> list[Change]:
    """Checks: definitions against the ones last applied (a manifest change), and what the agent shows against
    the manifest (drift: a check removed, replaced by another kind, renamed)."""
    wanted = {c.check_id: c for c in spec.checks}
    changes = _definition_changes(applied_checks, wanted) if applied_checks is not None else []
    seen = {c.check_id: c for c in found.seen_checks or ()}
    if found.seen_checks is None:
        return changes
    for check_id, check in sorted(wanted.items()):
        now = seen.get(check_id)
        label = _label(check)
        if now is None:
            changes.append(Change(f"checks[{label}]", "missing in Consul", _definition(check), "drift"))
        elif now.kind and now.kind != check.kind:
            changes.append(Change(f"checks[{label}].type", now.kind, check.kind, "drift"))
        elif check.fields().get("Name") and now.name != check.fields()["Name"]:
            changes.append(Change(f"checks[{label}].name", now.name, check.fields()["Name"], "drift"))
    for check_id in sorted(set(seen) - set(wanted)):
        changes.append(Change(f"checks[{check_id}]", f"{seen[check_id].kind} check", "not in the manifest", "drift"))
    return changes


def _definition_changes(applied_checks: tuple[CheckSpec, ...], wanted: dict[str, CheckSpec]) -> list[Change]:
    """Each check's definition against the one last applied: added, removed, a field changed (manifest changes)."""
    changes: list[Change] = []
    applied = {c.check_id: c for c in applied_checks}
    for check_id in sorted(set(applied) | set(wanted)):
        before, after = applied.get(check_id), wanted.get(check_id)
        label = _label(after or before)
        if before is None or after is None:
            changes.append(Change(f"checks[{label}]", _definition(before), _definition(after), "manifest"))
            continue
        old, new = before.fields(), after.fields()
        for name in sorted(set(old) | set(new)):
            if old.get(name) != new.get(name):
                changes.append(Change(f"checks[{label}].{_snake(name)}", old.get(name), new.get(name), "manifest"))
    return changes


def _label(check: CheckSpec | None) -> str:
    return check.label if check is not None else "?"


def _definition(check: CheckSpec | None) -> Any:
    return None if check is None else {_snake(k): v for k, v in check.fields().items()}


def _snake(name: str) -> str:
    known = {
        "HTTP": "http",
        "TCP": "tcp",
        "GRPC": "grpc",
        "TTL": "ttl",
        "TLSSkipVerify": "tls_skip_verify",
        "GRPCUseTLS": "grpc_use_tls",
        "DeregisterCriticalServiceAfter": "deregister_critical_after",
    }
    if name in known:
        return known[name]
    return "".join(f"_{ch.lower()}" if ch.isupper() and i else ch.lower() for i, ch in enumerate(name))


_ORDER = {
    ("owner", "conflict"): 0,
    ("kv", "conflict"): 0,
    ("service", "conflict"): 0,
    ("kv", "adopt"): 1,
    ("kv", "create"): 1,
    ("kv", "update"): 1,
    ("kv", "delete"): 1,
    ("service", "adopt"): 2,
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
