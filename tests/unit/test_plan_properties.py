"""Property-based tests of the pure planner: ownership is never violated, plans are deterministic, and applying a
plan (as the planner's own model of its actions' effect) converges: planning again finds nothing to do."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from manifest_runner.converge.ownership import OwnershipRecord
from manifest_runner.converge.planner import Plan, PlanPolicy, plan
from manifest_runner.converge.state import DesiredState, KVEntry, ObservedState, ServiceSpec, freeze
from manifest_runner.marks import MANAGED_BY
from tests.budget import examples

OWNER = "me"
KEYS = [f"app/{name}" for name in "abcdefgh"]
SERVICE_IDS = [f"svc-{n}" for n in range(5)]


def service(service_id: str, owner: str | None, tag: str) -> ServiceSpec:
    meta = {"managed-by": MANAGED_BY, "manifest-owner": owner} if owner else {}
    spec = ServiceSpec(service_id=service_id, name="svc", port=80, tags=(tag,), meta=freeze(meta))
    return replace(spec, meta=freeze({**meta, "manifest-hash": spec.digest()})) if owner else spec


@st.composite
def worlds(draw: st.DrawFn) -> tuple[DesiredState, ObservedState]:
    desired_keys = draw(st.lists(st.sampled_from(KEYS), unique=True))
    desired_kv = tuple(
        KVEntry(key, draw(st.sampled_from([b"1", b"2"])), 0xC0DE0001, draw(st.sampled_from(["seed", "enforce"])))
        for key in sorted(desired_keys)
    )
    desired_ids = draw(st.lists(st.sampled_from(SERVICE_IDS), unique=True))
    desired_services = tuple(service(sid, OWNER, draw(st.sampled_from(["a", "b"]))) for sid in sorted(desired_ids))
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
        kind = draw(st.sampled_from(["absent", "ours", "other-owner", "unmanaged"]))
        if kind == "ours":
            observed_services[sid] = service(sid, OWNER, draw(st.sampled_from(["a", "b"])))
        elif kind == "other-owner":
            observed_services[sid] = service(sid, "someone", "a")
        elif kind == "unmanaged":
            observed_services[sid] = service(sid, None, "a")
    observed = ObservedState(
        OWNER,
        observed_services,
        observed_kv,
        OwnershipRecord(OWNER, record, 100) if record or draw(st.booleans()) else None,
    )
    return DesiredState(OWNER, desired_services, desired_kv, prune=False), observed


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
        elif action.kind == "service" and action.op in ("create", "update"):
            assert action.service is not None
            services[action.target] = action.service
        elif action.kind == "service" and action.op == "delete":
            services.pop(action.target)
    return ObservedState(OWNER, services, kv, OwnershipRecord(OWNER, record, 2000) if record else None)


@settings(max_examples=examples(400), deadline=None)
@given(worlds(), st.booleans(), st.booleans())
def test_never_touches_what_is_not_ours(world: tuple[DesiredState, ObservedState], prune: bool, destroy: bool) -> None:
    desired, observed = world
    result = plan(desired, observed, PlanPolicy(prune=prune, destroy=destroy))
    mine = owned(observed)
    for action in result.actions:
        if action.kind == "kv" and action.op in ("update", "delete"):
            assert action.target in mine, action
            assert action.index == observed.kv[action.target].modify_index  # compare-and-set on what was seen
        if action.kind == "kv" and action.op == "create":
            assert action.target not in observed.kv
            assert action.index == 0
        if action.kind == "service" and action.op in ("update", "delete"):
            found = observed.services[action.target]
            assert found.managed and found.owner == OWNER, action
    assert set(result.record_after) <= mine | {a.target for a in result.actions if a.op == "create"}


@settings(max_examples=examples(300), deadline=None)
@given(worlds(), st.booleans())
def test_plans_are_deterministic(world: tuple[DesiredState, ObservedState], prune: bool) -> None:
    desired, observed = world
    assert plan(desired, observed, PlanPolicy(prune=prune)) == plan(desired, observed, PlanPolicy(prune=prune))


@settings(max_examples=examples(400), deadline=None)
@given(worlds(), st.booleans())
def test_applying_a_plan_converges(world: tuple[DesiredState, ObservedState], prune: bool) -> None:
    desired, observed = world
    first = plan(desired, observed, PlanPolicy(prune=prune))
    if first.conflicts:
        return  # nothing is applied for an owner with conflicts
    after = simulate(observed, first)
    second = plan(desired, after, PlanPolicy(prune=prune))
    assert second.actions == (), second.actions
    for entry in desired.kv:
        assert entry.key in after.kv
        if entry.mode == "enforce":
            assert after.kv[entry.key].same_content(entry)


@settings(max_examples=examples(200), deadline=None)
@given(worlds())
def test_destroy_leaves_nothing_of_ours(world: tuple[DesiredState, ObservedState]) -> None:
    desired, observed = world
    result = plan(desired, observed, PlanPolicy(destroy=True))
    after = simulate(observed, result)
    assert not any(s.managed and s.owner == OWNER for s in after.services.values())
    assert owned(after) == set()
    foreign_before = {k: v for k, v in observed.kv.items() if k not in owned(observed)}
    assert {k: after.kv[k] for k in foreign_before} == foreign_before
