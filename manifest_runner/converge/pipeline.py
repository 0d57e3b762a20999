"""What ``plan``, ``apply`` and ``destroy`` do with a set of manifests, beyond one owner at a time.

- each owner's desired state, with its origin (:mod:`.origin`);
- an owner is required to be explicit when its manifests write anything (a file-name default would let two
  repositories with a ``consul.yaml`` share the owner ``consul``);
- the apply set's orphans (planned for deletion) and, without a set, the owners indexed as applied from these
  folders whose manifest is gone (reported);
- plans and applies of several owners at once, each under its own lock;
- the fingerprints a saved plan carries, and the check that they still hold.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from manifest_runner.consul.client import ConsulClient
from manifest_runner.converge.apply import ActionResult
from manifest_runner.converge.desired import desired_states
from manifest_runner.converge.origin import find_origin
from manifest_runner.converge.ownership import Origin
from manifest_runner.converge.planner import Plan, PlanPolicy
from manifest_runner.converge.reconcile import Outcome, converge, make_plan
from manifest_runner.converge.sets import ApplySet, owners_from_folders, read_set, write_set
from manifest_runner.converge.state import DesiredState, ObservedState
from manifest_runner.errors import ManifestError, Problem
from manifest_runner.manifest.loaded import ManifestSet

PARALLEL_OWNERS = 10


@dataclass(frozen=True, slots=True)
class Request:
    """What the command was asked to do."""

    prune: bool = False
    destroy: bool = False
    adopt: bool = False
    take_over: bool = False
    set_name: str | None = None


@dataclass(frozen=True, slots=True)
class Work:
    """One owner to plan or apply."""

    desired: DesiredState
    policy: PlanPolicy
    orphan: bool = False
    """An owner of the apply set whose manifest is gone: everything it owns is planned for deletion."""


@dataclass
class Scope:
    """Every owner of one command, and what it found about owners that are gone."""

    work: list[Work] = field(default_factory=list)
    apply_set: ApplySet | None = None
    gone: dict[str, str] = field(default_factory=dict)
    """Without a set: owners indexed as applied from these folders whose manifest is gone (owner -> folder)."""
    origins: dict[str, Origin | None] = field(default_factory=dict)

    def extra(self) -> dict[str, Any]:
        """Command-level fields of the JSON document."""
        out: dict[str, Any] = {}
        if self.apply_set is not None:
            orphans = [w.desired.owner for w in self.work if w.orphan]
            out["set"] = {"name": self.apply_set.name, "orphans": orphans}
        if self.gone:
            out["orphaned"] = [{"owner": o, "folder": f} for o, f in sorted(self.gone.items())]
        return out


def require_owners(manifests: ManifestSet) -> None:
    """An explicit ``owner:`` for every manifest that writes something (services or keys); :class:`ManifestError`
    at the manifest's place otherwise."""
    problems = [
        Problem(
            str(m.file),
            1,
            1,
            "owner",
            f"this manifest writes services or keys, and its owner would default to the file name {m.owner!r}, "
            "which another repository's file of the same name would share: set 'owner:'",
        )
        for m in manifests.manifests
        if m.manifest.owner is None and (m.manifest.services or m.manifest.kv.seed or m.manifest.kv.enforce)
    ]
    if problems:
        raise ManifestError(problems)


def owner_origins(manifests: ManifestSet) -> dict[str, Origin | None]:
    """Each owner's origin: that of its first manifest file."""
    return {owner: find_origin(manifests.of_owner(owner)[0].file) for owner in manifests.owners}


def scope(client: ConsulClient, manifests: ManifestSet, request: Request) -> Scope:
    origins = owner_origins(manifests)
    policy = PlanPolicy(prune=request.prune, destroy=request.destroy, adopt=request.adopt, take_over=request.take_over)
    found = Scope(origins=origins)
    found.work = [Work(d, policy) for d in desired_states(manifests, origins).values()]
    if request.set_name is not None:
        found.apply_set = read_set(client, request.set_name)
        if request.prune or request.destroy:
            present = set(manifests.owners)
            for owner in sorted(set(found.apply_set.owners) - present):
                found.work.append(Work(DesiredState(owner), PlanPolicy(destroy=True), orphan=True))
    elif request.prune:
        found.gone = _gone(client, manifests, origins)
    return found


def _gone(client: ConsulClient, manifests: ManifestSet, origins: dict[str, Origin | None]) -> dict[str, str]:
    gone: dict[str, str] = {}
    by_repo: dict[str, tuple[Origin, set[str]]] = {}
    for origin in (o for o in origins.values() if o is not None):
        by_repo.setdefault(origin.repo, (origin, set()))[1].add(origin.folder)
    for origin, folders in by_repo.values():
        for owner, folder in owners_from_folders(client, origin, folders).items():
            if owner not in manifests.owners:
                gone[owner] = folder
    return gone


def plan_all(client: ConsulClient, work: Sequence[Work]) -> list[tuple[ObservedState, Plan]]:
    with ThreadPoolExecutor(max_workers=max(1, min(PARALLEL_OWNERS, len(work)))) as pool:
        return list(pool.map(lambda w: make_plan(client, w.desired, w.policy), work))


def apply_all(
    client: ConsulClient,
    work: Sequence[Work],
    *,
    lock_timeout: float,
    on_done: Callable[[Work, Outcome], None] | None = None,
    on_result: Callable[[ActionResult], None] | None = None,
    expected: dict[str, str] | None = None,
) -> list[Outcome]:
    """Converge every owner, several at once, each under its own lock; ``expected``: the observed fingerprints of a
    saved plan (owner -> fingerprint)."""

    def one(item: Work) -> Outcome:
        outcome = converge(
            client,
            item.desired,
            item.policy,
            lock_timeout=lock_timeout,
            on_result=on_result,
            expected=None if expected is None else expected.get(item.desired.owner, "absent from the saved plan"),
        )
        if on_done is not None:
            on_done(item, outcome)
        return outcome

    with ThreadPoolExecutor(max_workers=max(1, min(PARALLEL_OWNERS, len(work)))) as pool:
        return list(pool.map(one, work))


def update_set(client: ConsulClient, found: Scope, outcomes: Sequence[Outcome]) -> bool:
    """After an apply with a set: the set names the owners applied now (and the orphans whose removal failed)."""
    if found.apply_set is None:
        return True
    kept = [w.desired.owner for w, o in zip(found.work, outcomes, strict=True) if not w.orphan or not o.ok]
    return write_set(client, found.apply_set, kept)


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
