"""Property-based tests of the pure planner: ownership is never violated, plans are deterministic, and applying a
plan (as the planner's own model of its actions' effect) converges: planning again finds nothing to do, the record
included. The worlds hold checks (as last applied, and as the agent shows them, drifted or not), origins, and
unowned items that equal the manifest (for --adopt)."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from manifest_runner.converge.desired import _with_digest
from manifest_runner.converge.ownership import Origin, OwnershipRecord
from manifest_runner.converge.planner import Plan, PlanPolicy, plan
from manifest_runner.converge.state import (
    CheckSpec,
    DesiredState,
    KVEntry,
    ObservedCheck,
    ObservedState,
    ServiceSpec,
    freeze,
)
from manifest_runner.marks import MANAGED_BY
from tests.budget import examples

OWNER = "me"
KEYS = [f"app/{name}" for name in "abcdefgh"]
SERVICE_IDS = [f"svc-{n}" for n in range(5)]


ORIGINS = [None, Origin("git.example.com/a", ""), Origin("git.example.com/b", "x")]
CHECKS = {
    "none": (),
    "ttl": (CheckSpec.of("c1", {"TTL": "30s"}),),
    "http": (CheckSpec.of("c1", {"HTTP": "http://h/", "Interval": "10s"}),),
    "two": (CheckSpec.of("c1", {"TTL": "30s"}), CheckSpec.of("c2", {"TCP": "h:1", "Interval": "15s"})),
}


def service(service_id: str, owner: str | None, tag: str, checks: str = "none") -> ServiceSpec:
    """A registration as desired (with the marks desired.py gives it), or an unmanaged one (owner None)."""
    meta = {"managed-by": MANAGED_BY, "manifest-owner": owner} if owner else {}
    spec = ServiceSpec(
        service_id=service_id, name="svc", port=80, tags=(tag,), meta=freeze(meta), checks=CHECKS[checks]
    )
    return _with_digest(spec) if owner else spec


def as_seen(spec: ServiceSpec, seen: tuple[CheckSpec, ...] | None = None) -> ServiceSpec:
    """What the agent shows of a registration: its checks by id and kind only."""
    shown = spec.checks if seen is None else seen
    return replace(spec, seen_checks=tuple(ObservedCheck(c.check_id, c.kind) for c in shown))


@st.composite
def worlds(draw: st.DrawFn) -> tuple[DesiredState, ObservedState]:
    desired_keys = draw(st.lists(st.sampled_from(KEYS), unique=True))
    desired_kv = tuple(
        KVEntry(key, draw(st.sampled_from([b"1", b"2"])), 0xC0DE0001, draw(st.sampled_from(["seed", "enforce"])))
        for key in sorted(desired_keys)
    )
    desired_ids = draw(st.lists(st.sampled_from(SERVICE_IDS), unique=True))
    desired_services = tuple(
        service(sid, OWNER, draw(st.sampled_from(["a", "b"])), draw(st.sampled_from(sorted(CHECKS))))
        for sid in sorted(desired_ids)
    )
    observed_kv: dict[str, KVEntry] = {}
    record: dict[str, int] = {}
    index = 10
    for key in KEYS:
        kind = draw(st.sampled_from(["absent", "ours", "foreign", "recreated"]))
        if kind == "absent":
            continue
        index += 1
        observed_kv[key] = KVEntry(
            key,
            draw(st.sampled_from([b"1", b"2", b"x"])),
            draw(st.sampled_from([0, 0xC0DE0001])),
            modify_index=index + 5,
            create_index=index,
        )
        if kind == "ours":
            record[key] = index
        elif kind == "recreated":
            record[key] = index - 1  # recorded with an older create index: someone re-created it
    if draw(st.booleans()):
        record["app/gone"] = 3  # recorded, no longer exists
    observed_services: dict[str, ServiceSpec] = {}
    for sid in SERVICE_IDS:
        kind = draw(st.sampled_from(["absent", "ours", "ours-drifted", "other-owner", "unmanaged"]))
        checks = draw(st.sampled_from(sorted(CHECKS)))
        if kind == "ours":
            observed_services[sid] = as_seen(service(sid, OWNER, draw(st.sampled_from(["a", "b"])), checks))
        elif kind == "ours-drifted":  # a check replaced by hand, or removed, the meta kept
            applied = service(sid, OWNER, "a", checks)
            observed_services[sid] = as_seen(applied, draw(st.sampled_from(list(CHECKS.values()))))
        elif kind == "other-owner":
            observed_services[sid] = as_seen(service(sid, "someone", "a", checks))
        elif kind == "unmanaged":
            observed_services[sid] = as_seen(service(sid, None, draw(st.sampled_from(["a", "b"]))), ())
    desired_origin = draw(st.sampled_from(ORIGINS))
    record_origin = draw(st.sampled_from(ORIGINS))
    observed = ObservedState(
        OWNER,
        observed_services,
        observed_kv,
        OwnershipRecord(OWNER, record, 100, origin=record_origin) if record or draw(st.booleans()) else None,
    )
    return DesiredState(OWNER, desired_services, desired_kv, prune=False, origin=desired_origin), observed


def owned(observed: ObservedState) -> set[str]:
    record = observed.record.keys if observed.record else {}
    return {k for k, i in record.items() if k in observed.kv and observed.kv[k].create_index == i}


def simulate(observed: ObservedState, result: Plan) -> ObservedState:
    """The effect each action is meant to have, in memory (a model of the plan's meaning, used only to check that
    the planner converges; Consul's real behaviour is tested against real agents)."""
    kv = dict(observed.kv)
    services = dict(observed.services)
    next_index = 1000
    record = dict(result.record_after)
    for action in result.actions:
        next_index += 1
        if action.kind == "kv" and action.op in ("create", "update"):
            assert action.entry is not None
            create = kv[action.target].create_index if action.op == "update" else next_index
            kv[action.target] = KVEntry(
                action.target, action.entry.value, action.entry.flags, modify_index=next_index, create_index=create
            )
            if action.op == "create":
                record[action.target] = next_index
        elif action.kind == "kv" and action.op == "delete":
            kv.pop(action.target)
        elif action.kind == "service" and action.op in ("create", "update", "adopt"):
            assert action.service is not None
            services[action.target] = as_seen(action.service)
        elif action.kind == "service" and action.op == "delete":
            services.pop(action.target)
    written = OwnershipRecord(OWNER, record, 2000, applied=dict(result.applied_after), origin=result.origin)
    keep = result.record_changes and (record or result.origin)
    return ObservedState(
        OWNER, services, kv, written if keep else observed.record if not result.record_changes else None
    )


@settings(max_examples=examples(400), deadline=None)
@given(worlds(), st.booleans(), st.booleans(), st.booleans())
def test_never_touches_what_is_not_ours(
    world: tuple[DesiredState, ObservedState], prune: bool, destroy: bool, adopt: bool
) -> None:
    desired, observed = world
    result = plan(desired, observed, PlanPolicy(prune=prune, destroy=destroy, adopt=adopt))
    mine = owned(observed)
    record_origin = observed.record.origin if observed.record else None
    if record_origin and desired.origin and record_origin != desired.origin and not destroy:
        assert [a.op for a in result.actions] == ["conflict"]  # another origin's owner: nothing else at all
        return
    for action in result.actions:
        if action.op == "adopt":
            assert adopt
            if action.kind == "kv":
                assert action.target not in mine and observed.kv[action.target].value == action.entry.value
            else:
                assert not observed.services[action.target].managed
        if action.kind == "kv" and action.op in ("update", "delete"):
            assert action.target in mine, action
            assert action.index == observed.kv[action.target].modify_index  # compare-and-set on what was seen
        if action.kind == "kv" and action.op == "create":
            assert action.target not in observed.kv
            assert action.index == 0
        if action.kind == "service" and action.op in ("update", "delete"):
            found = observed.services[action.target]
            assert found.managed and found.owner == OWNER, action
    claimed = {a.target for a in result.actions if a.op in ("create", "adopt")}
    assert set(result.record_after) <= mine | claimed


@settings(max_examples=examples(300), deadline=None)
@given(worlds(), st.booleans())
def test_plans_are_deterministic(world: tuple[DesiredState, ObservedState], prune: bool) -> None:
    desired, observed = world
    assert plan(desired, observed, PlanPolicy(prune=prune)) == plan(desired, observed, PlanPolicy(prune=prune))


@settings(max_examples=examples(400), deadline=None)
@given(worlds(), st.booleans(), st.booleans())
def test_applying_a_plan_converges(world: tuple[DesiredState, ObservedState], prune: bool, adopt: bool) -> None:
    desired, observed = world
    first = plan(desired, observed, PlanPolicy(prune=prune, adopt=adopt))
    if first.conflicts:
        return  # nothing is applied for an owner with conflicts
    after = simulate(observed, first)
    second = plan(desired, after, PlanPolicy(prune=prune, adopt=adopt))
    assert second.actions == (), second.actions
    assert not second.record_changes
    for entry in desired.kv:
        assert entry.key in after.kv
        if entry.mode == "enforce":
            assert after.kv[entry.key].same_content(entry)


@settings(max_examples=examples(200), deadline=None)
@given(worlds())
def test_destroy_leaves_nothing_of_ours(world: tuple[DesiredState, ObservedState]) -> None:
    desired, observed = world
    result = plan(desired, observed, PlanPolicy(destroy=True))
    if result.conflicts:
        return  # an owner recorded as applied from another repository is not destroyed from here
    after = simulate(observed, result)
    assert not any(s.managed and s.owner == OWNER for s in after.services.values())
    assert owned(after) == set()
    foreign_before = {k: v for k, v in observed.kv.items() if k not in owned(observed)}
    assert {k: after.kv[k] for k in foreign_before} == foreign_before
