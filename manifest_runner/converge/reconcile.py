"""Observe, plan, lock, re-check, apply: one owner made to match its manifests.

An unchanged manifest costs the observation (a few reads, made concurrently) and nothing else: no lock, no
write. When there is
something to do, the owner's lock is taken, the state is observed and planned again under it (another applier may
have done the work meanwhile), and the plan is applied. A compare-and-set that loses a race is not retried blindly:
the state is read again and planned again, at most ``attempts`` times.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from manifest_runner.consul.client import ConsulClient, TxnFailed
from manifest_runner.consul.lock import Lock
from manifest_runner.converge.apply import ActionResult, ApplyReport, execute
from manifest_runner.converge.observe import observe
from manifest_runner.converge.planner import DEFAULT_POLICY, Plan, PlanPolicy, plan
from manifest_runner.converge.state import DesiredState, ObservedState
from manifest_runner.converge.versions import gated, unsupported
from manifest_runner.errors import ConsulRefused, ConsulUnsupportedFeature, ManifestRunnerError
from manifest_runner.marks import lock_key
from manifest_runner.util.cancel import Cancel

APPLY_LOCK_TTL = 10.0
"""Consul's shortest session TTL: an applier that dies (kill -9, a lost node) frees its owner's lock within about
twice this (Consul's reaper), plus the 1 s lock-delay; a live applier renews it every 5 s."""


@dataclass
class Outcome:
    """The plan that was made (before the lock) and, when anything was written or tried, the apply report."""

    plan: Plan
    report: ApplyReport | None = None

    @property
    def ok(self) -> bool:
        if self.plan.conflicts and self.report is None:
            return False
        return self.report is None or self.report.ok


class PlanStale(ManifestRunnerError):
    """A saved plan no longer matches Consul or the manifests: nothing was written."""


def require_supported(client: ConsulClient, desired: DesiredState) -> None:
    """Refuse, before any write, a desired state with fields the agent's Consul version does not take."""
    if not gated(desired):
        return
    try:
        version = client.version()
    except ConsulRefused:
        return  # a token without agent:read: the agent will refuse what it does not know, in its own words
    problems = unsupported(desired, version)
    if problems:
        raise ConsulUnsupportedFeature("; ".join(problems) + "; nothing was sent", operation="GET /v1/agent/self")


def make_plan(client: ConsulClient, desired: DesiredState, policy: PlanPolicy) -> tuple[ObservedState, Plan]:
    require_supported(client, desired)
    observed = observe(client, desired)
    return observed, plan(desired, observed, policy)


def _replan(
    client: ConsulClient, desired: DesiredState, policy: PlanPolicy, previous: tuple[ObservedState, Plan]
) -> tuple[ObservedState, Plan]:
    """Observe again; plan again only if Consul changed since ``previous`` (planning 2,000 keys costs ~10 ms)."""
    observed = observe(client, desired)
    if observed == previous[0]:
        return observed, previous[1]
    return observed, plan(desired, observed, policy)


def _seen_free(observed: ObservedState) -> int | None:
    """The lock key's index to take the lock at without observing again, when that is safe.

    Every applier of an owner takes and releases its lock key, so a key unmoved since it was read (before every
    other read of the observation) proves that nobody applied in between and the first plan stands. A key that did
    not exist is the same proof only for an owner that had nothing yet: a destroy deletes the key, and what a
    destroy leaves (nothing owned) is then what was observed."""
    seen = observed.lock_seen_free
    if seen == 0 and (observed.record is not None or observed.owned_services()):
        return None
    return seen


def _stale(desired: DesiredState, observed: ObservedState, expected: str | None) -> None:
    if expected is not None and observed.fingerprint() != expected:
        raise PlanStale(
            f"owner {desired.owner}: Consul changed since the plan was made (a key, a service or the record moved); "
            "nothing was written: make the plan again and review it"
        )


def converge(
    client: ConsulClient,
    desired: DesiredState,
    policy: PlanPolicy = DEFAULT_POLICY,
    *,
    lock_timeout: float = 60.0,
    attempts: int = 3,
    on_result: Callable[[ActionResult], None] | None = None,
    cancel: Cancel | None = None,
    expected: str | None = None,
) -> Outcome:
    """Make Consul match ``desired``. ``cancel`` ends a wait for the lock at once (raising
    :class:`~manifest_runner.util.cancel.Cancelled`): a shutdown is never held up by another applier.
    ``expected``: the observed fingerprint of a saved plan; any difference, before the lock or under it, raises
    :class:`PlanStale` before anything is written."""
    require_supported(client, desired)
    first_observed = observe(client, desired, for_apply=True)
    _stale(desired, first_observed, expected)
    first = plan(desired, first_observed, policy)
    if not first.has_changes or first.conflicts:
        return Outcome(first)
    latest = (first_observed, first)
    with Lock(
        client,
        lock_key(desired.owner),
        timeout=lock_timeout,
        name=f"consul-manifest apply {desired.owner}",
        ttl=APPLY_LOCK_TTL,
        cancel=cancel,
        seen_free=_seen_free(first_observed) if expected is None else None,
    ) as lock:
        report = ApplyReport(owner=desired.owner)
        done_before: list[ActionResult] = []
        for attempt in range(1, attempts + 1):
            if attempt > 1 or not lock.unmoved:
                latest = _replan(client, desired, policy, latest)
            _stale(desired, latest[0], expected)
            current = latest[1]
            if current.conflicts:
                return Outcome(current)
            if not current.has_changes:
                report = ApplyReport(owner=desired.owner)
                break
            report = execute(client, current, _only_done(on_result))
            if not isinstance(report.error, TxnFailed) or attempt == attempts or expected is not None:
                break
            done_before.extend(r for r in report.results if r.status == "done")  # lost a race: read, plan again
        report.results[:0] = done_before
        report.attempts = attempt
        report.lock_acquired_at = lock.acquired_at
    report.lock_released_at = lock.released_at
    if policy.destroy and report.ok:
        _remove_lock_key(client, desired.owner)
    return Outcome(first, report)


def _remove_lock_key(client: ConsulClient, owner: str) -> None:
    """After a destroy, the owner's lock key goes too, unless another applier holds it now."""
    _, entries = client.kv_get(lock_key(owner))
    if entries and not entries[0].session:
        client.kv_delete(lock_key(owner), cas=entries[0].modify_index)


def _only_done(callback: Callable[[ActionResult], None] | None) -> Callable[[ActionResult], None] | None:
    """Stream successes as they happen; failures are reported once, from the final attempt."""
    if callback is None:
        return None
    sink = callback

    def forward(result: ActionResult) -> None:
        if result.status == "done":
            sink(result)

    return forward
