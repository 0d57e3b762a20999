"""Execute exactly a Plan: the only code that writes the manifest's state to Consul.

KV first (configuration exists before the service is discoverable), in transactions of at most the server's op
limit and body size, each carrying the ownership record's update with compare-and-set, so that a key and the record
claiming it are written together or not at all. Then one registration per created or changed service (the agent has
no batch form), then deregistrations. Every write is compare-and-set where Consul offers it: a concurrent change
makes the transaction roll back instead of being overwritten.

On the first failure, the rest is skipped; the report says what was done, what failed and what was skipped.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

from manifest_runner.consul.client import TXN_BODY_LIMIT, ConsulClient, TxnFailed, TxnTooLarge, txn_op_size
from manifest_runner.consul.payloads import AgentService
from manifest_runner.converge.observe import services_filter
from manifest_runner.converge.origin import repo_digest
from manifest_runner.converge.ownership import OwnershipRecord, journal_entry
from manifest_runner.converge.planner import Action, Plan
from manifest_runner.converge.view import SYMBOLS
from manifest_runner.errors import ConsulError, ConsulProtocolError, ConsulRequestError
from manifest_runner.marks import HASH_KEY, MANAGED_BY, MANAGED_BY_KEY, journal_prefix, origin_key, record_key

Status = Literal["done", "failed", "skipped"]
BODY_BUDGET = int(TXN_BODY_LIMIT * 0.9)
PARALLEL_TRANSACTIONS = 4
PARALLEL_REGISTRATIONS = 8


@dataclass(frozen=True, slots=True)
class ActionResult:
    action: Action
    status: Status
    error: str | None = None

    def line(self) -> str:
        symbol = SYMBOLS[self.action.op]
        text = f"{symbol} {self.action.kind} {self.action.target}"
        if self.status == "done":
            return f"{text}: {_past(self.action.op)}"
        if self.status == "failed":
            return f"{text}: FAILED: {self.error}"
        return f"{text}: skipped"


@dataclass
class ApplyReport:
    owner: str
    results: list[ActionResult] = field(default_factory=list)
    record_written: bool = False
    error: BaseException | None = None
    lock_acquired_at: float | None = None
    lock_released_at: float | None = None
    attempts: int = 0

    @property
    def ok(self) -> bool:
        return self.error is None and all(r.status == "done" for r in self.results)

    def count(self, status: Status) -> int:
        return sum(1 for r in self.results if r.status == status)

    def summary(self) -> str:
        done = [r.action.op for r in self.results if r.status == "done"]
        parts = [f"{done.count(op)} {_past(op)}" for op in ("create", "update", "delete")]
        if done.count("adopt"):
            parts.append(f"{done.count('adopt')} adopted")
        text = f"{self.owner}: {', '.join(parts)}"
        if self.count("failed") or self.count("skipped"):
            text += f"; {self.count('failed')} failed, {self.count('skipped')} skipped"
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "ok": self.ok,
            "results": [
                {**r.action.to_json(), "status": r.status, **({"error": r.error} if r.error else {})}
                for r in self.results
            ],
            "record_written": self.record_written,
            "error": str(self.error) if self.error else None,
            "lock": {"acquired_at": self.lock_acquired_at, "released_at": self.lock_released_at},
            "attempts": self.attempts,
        }


def _past(op: str) -> str:
    return {"create": "created", "update": "updated", "delete": "deleted", "adopt": "adopted", "conflict": "conflict"}[
        op
    ]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def kv_op(action: Action) -> dict[str, Any]:
    """The transaction operation for one KV action (always compare-and-set)."""
    if action.op == "delete":
        return {"KV": {"Verb": "delete-cas", "Key": action.target, "Index": action.index}}
    entry = action.entry
    if entry is None:
        raise ValueError(f"KV action {action.op} {action.target} carries no entry")
    return {
        "KV": {"Verb": "cas", "Key": entry.key, "Value": _b64(entry.value), "Flags": entry.flags, "Index": action.index}
    }


def _op_size(action: Action) -> int:
    return txn_op_size(action.target, len(action.entry.value) if action.entry else 0)


def kv_batches(
    actions: Sequence[Action], op_limit: int, body_budget: int = BODY_BUDGET, last_reserve: int = 0
) -> list[list[Action]]:
    """Split KV actions into transactions (pure; order kept).

    Each transaction keeps one operation slot for its journal entry, the last keeps two (the record and the
    journal's removal) and ``last_reserve`` bytes of body for the record. Sizes are upper bounds."""
    batches: list[list[Action]] = [[]]
    sizes = [0]
    for action in actions:
        size = _op_size(action)
        if batches[-1] and (len(batches[-1]) >= op_limit - 1 or sizes[-1] + size > body_budget):
            batches.append([])
            sizes.append(0)
        batches[-1].append(action)
        sizes[-1] += size
    while len(batches[-1]) > 1 and (len(batches[-1]) > op_limit - 2 or sizes[-1] + last_reserve > body_budget):
        moved = batches[-1].pop()
        sizes[-1] -= _op_size(moved)
        batches.append([moved])
        sizes.append(_op_size(moved))
    return batches


def execute(client: ConsulClient, plan: Plan, on_result: Callable[[ActionResult], None] | None = None) -> ApplyReport:
    """Apply ``plan`` (which must have no conflicts). Never raises for a failed write: the report carries it."""
    report = ApplyReport(owner=plan.owner)
    finished: set[int] = set()

    def record(result: ActionResult) -> None:
        report.results.append(result)
        finished.add(id(result.action))
        if on_result is not None:
            on_result(result)

    def done(action: Action) -> None:
        record(ActionResult(action, "done"))

    try:
        kv_writes = [a for a in plan.actions if a.kind == "kv" and a.op != "adopt"]
        if kv_writes or plan.record_changes:
            _apply_kv(client, plan, kv_writes, done)
        for action in (a for a in plan.actions if a.kind == "kv" and a.op == "adopt"):
            done(action)  # claimed by the record just written
        services = [a for a in plan.actions if a.kind == "service"]
        if services:
            _apply_services(client, plan.owner, services, done)
    except _StepFailed as failure:
        report.error = failure.cause
        for action in failure.actions:
            record(ActionResult(action, "failed", str(failure.cause)))
        for action in plan.actions:
            if id(action) not in finished:
                record(ActionResult(action, "skipped"))
    report.record_written = plan.record_changes and report.error is None
    return report


class _StepFailed(Exception):
    """A write failed: ``actions`` are the ones it concerned (the rest of the plan is skipped)."""

    def __init__(self, cause: ConsulError, actions: list[Action]) -> None:
        self.cause = cause
        self.actions = actions
        super().__init__(str(cause))


def _apply_kv(client: ConsulClient, plan: Plan, actions: list[Action], done: Callable[[Action], None]) -> None:
    """KV actions in transactions; each claims (or releases) its keys in the same transaction: a journal entry in
    all but the last, the rewritten record in the last (which also removes the journal). The journal makes the
    transactions before the last independent of each other, so up to PARALLEL_TRANSACTIONS run at once (Consul
    commits concurrent transactions together); the last one runs after all of them succeeded."""
    before = plan.record_before
    owned: dict[str, int] = dict(before.keys) if before else {}
    for key in plan.forgotten:
        owned.pop(key, None)
    owned.update({a.target: plan.record_after[a.target] for a in plan.actions if a.op == "adopt" and a.kind == "kv"})
    record_index = before.modify_index if before else 0
    journal = before.journals if before else 0
    record_size = 120 + sum(len(k) * 6 + 24 for k in {*owned, *(a.target for a in actions)})
    *middle, last = kv_batches(actions, client.op_limit(), last_reserve=record_size)
    if middle:
        created, written = _journalled(client, plan.owner, middle, done)
        journal += written
        for batch in middle:
            owned = _owned_after(owned, batch)
        owned.update(created)
    while True:
        after = _owned_after(owned, last)
        ops = [kv_op(a) for a in last] + _record_ops(plan, after, last, record_index, journal_left=journal > 0)
        if not ops:
            break
        try:
            _transaction(client, last, ops)
            break
        except _StepFailed as failure:
            if not isinstance(failure.cause, TxnTooLarge):
                raise
            # the server takes fewer operations than its version suggested: journal these too, then the record
            created, written = _journalled(client, plan.owner, kv_batches(last, failure.cause.limit), done)
            journal += written
            owned = _owned_after(owned, last) | created
            last = []
    for action in last:
        done(action)


def _transaction(client: ConsulClient, batch: list[Action], ops: list[dict[str, Any]]) -> dict[str, int]:
    """One transaction; returns the create index of each key it created. Failures name the actions concerned.

    Consul answers a committed transaction with one result for each write (``set``/``cas``; deletes have none),
    in order: anything else (an empty 200 from a proxy, say) means nothing can be assumed written."""
    try:
        results = client.txn(ops)
    except TxnFailed as err:
        culprits = [batch[i] for i, _ in err.errors if 0 <= i < len(batch)] or batch
        raise _StepFailed(err, culprits) from None
    except ConsulError as err:
        raise _StepFailed(err, batch) from None
    written = [op["KV"]["Key"] for op in ops if op["KV"]["Verb"] in ("set", "cas")]
    if [r.key for r in results] != written:
        cause = ConsulProtocolError(
            f"the transaction's answer names {len(results)} written keys, not the {len(written)} it was sent; "
            "nothing is assumed written (is something else answering in Consul's place?)",
            operation="PUT /v1/txn",
        )
        raise _StepFailed(cause, batch)
    creates = {a.target for a in batch if a.op == "create"}
    return {r.key: r.create_index for r in results if r.key in creates}


def _journal_one(client: ConsulClient, owner: str, batch: list[Action]) -> tuple[dict[str, int], int]:
    """A batch with its journal entry; split further if the server's op limit is lower than assumed. Returns the
    create indexes and how many journal entries were written."""
    created = [a.target for a in batch if a.op == "create"]
    deleted = [a.target for a in batch if a.op == "delete"]
    applied = {a.target: a.entry.digest for a in batch if a.entry is not None and a.op in ("create", "update")}
    name = f"{journal_prefix(owner)}{uuid.uuid4().hex}"
    value = _b64(journal_entry(created, deleted, applied))
    entry = {"KV": {"Verb": "cas", "Key": name, "Value": value, "Index": 0}}
    try:
        return _transaction(client, batch, [*(kv_op(a) for a in batch), entry]), 1
    except _StepFailed as failure:
        if not isinstance(failure.cause, TxnTooLarge):
            raise
        limit = failure.cause.limit
    indexes: dict[str, int] = {}
    entries = 0
    for part in kv_batches(batch, limit):
        part_indexes, part_entries = _journal_one(client, owner, part)
        indexes.update(part_indexes)
        entries += part_entries
    return indexes, entries


def _journalled(
    client: ConsulClient, owner: str, batches: list[list[Action]], done: Callable[[Action], None]
) -> tuple[dict[str, int], int]:
    """Every batch but the last, up to PARALLEL_TRANSACTIONS at a time. On a failure, batches not yet started are
    cancelled (reported as skipped); what succeeded stays claimed in the journal."""
    created: dict[str, int] = {}
    entries = 0
    failure: _StepFailed | None = None
    with ThreadPoolExecutor(max_workers=min(PARALLEL_TRANSACTIONS, len(batches))) as pool:
        futures = [pool.submit(_journal_one, client, owner, batch) for batch in batches]
        for batch, future in zip(batches, futures, strict=True):
            if future.cancelled():
                continue
            try:
                indexes, written = future.result()
            except _StepFailed as err:
                failure = failure or err
                for pending in futures:
                    pending.cancel()
                continue
            created.update(indexes)
            entries += written
            for action in batch:
                done(action)
    if failure is not None:
        raise failure
    return created, entries


def _owned_after(owned: dict[str, int], batch: list[Action]) -> dict[str, int]:
    after = dict(owned)
    for action in batch:
        if action.op == "create":
            after[action.target] = 0
        elif action.op == "delete":
            after.pop(action.target, None)
    return after


def _record_ops(
    plan: Plan, after: dict[str, int], batch: list[Action], record_index: int, *, journal_left: bool
) -> list[dict[str, Any]]:
    """The last transaction's bookkeeping: the record rewritten with compare-and-set (deleted when the owner is
    left with no key and no origin to remember), and the journal removed."""
    key = record_key(plan.owner)
    ops: list[dict[str, Any]] = []
    if after or plan.origin is not None:
        created = frozenset(a.target for a in batch if a.op == "create")
        applied = {k: v for k, v in plan.applied_after.items() if k in after}
        record = OwnershipRecord(plan.owner, after, applied=applied, origin=plan.origin)
        content = record.encode(created_now=created)
        ops.append({"KV": {"Verb": "cas", "Key": key, "Value": _b64(content), "Index": record_index}})
    elif record_index:
        ops.append({"KV": {"Verb": "delete-cas", "Key": key, "Index": record_index}})
    ops += _origin_index_ops(plan, keep=bool(after or plan.origin is not None))
    if journal_left:
        ops.append({"KV": {"Verb": "delete-tree", "Key": journal_prefix(plan.owner)}})
    return ops


def _origin_index_ops(plan: Plan, *, keep: bool) -> list[dict[str, Any]]:
    """The owner's entry in the index of its repository's owners: written with the record when the origin is new
    or moves, removed with the record (see :mod:`.sets`)."""
    before = plan.record_before.origin if plan.record_before else None
    ops: list[dict[str, Any]] = []
    if before is not None and (not keep or before != plan.origin):
        ops.append({"KV": {"Verb": "delete", "Key": origin_key(repo_digest(before), plan.owner)}})
    if keep and plan.origin is not None and before != plan.origin:
        folder = _b64(plan.origin.folder.encode())
        ops.append({"KV": {"Verb": "set", "Key": origin_key(repo_digest(plan.origin), plan.owner), "Value": folder}})
    return ops


def _apply_services(client: ConsulClient, owner: str, actions: list[Action], done: Callable[[Action], None]) -> None:
    external = [a for a in actions if a.service is not None and a.service.node]
    local = [a for a in actions if a not in external]
    if external:
        _apply_external(client, external, done)
    if local:
        _apply_local(client, owner, local, done)


def _apply_external(client: ConsulClient, actions: list[Action], done: Callable[[Action], None]) -> None:
    """Services on external nodes, through the catalog: each action's node, service and checks in one transaction
    (several actions to a transaction, under the op limit); then a read of each node confirms them, and nodes this
    tool registered that no service uses any more are removed."""
    limit = client.op_limit()
    batches: list[tuple[list[Action], list[dict[str, Any]]]] = [([], [])]
    for action in actions:
        ops = external_ops(action)
        if batches[-1][0] and len(batches[-1][1]) + len(ops) > limit:
            batches.append(([], []))
        batches[-1][0].append(action)
        batches[-1][1].extend(ops)
    for batch, ops in batches:
        try:
            client.txn(ops, idempotent=True)
        except ConsulError as err:
            raise _StepFailed(err, batch) from None
    unconfirmed: list[Action] = []
    for node in sorted({a.service.node for a in actions if a.service is not None}):
        catalog = client.catalog_node(node)
        present = catalog.services if catalog is not None else {}
        for action in (a for a in actions if a.service is not None and a.service.node == node):
            if _shows(present.get(action.target), action):
                done(action)
            else:
                unconfirmed.append(action)
        if catalog is not None and not present and dict(catalog.meta).get(MANAGED_BY_KEY) == MANAGED_BY:
            client.txn([{"Node": {"Verb": "delete", "Node": {"Node": node}}}], idempotent=True)
    if unconfirmed:
        what = ", ".join(f"{a.op} {a.target}" for a in unconfirmed)
        raise _StepFailed(
            ConsulRequestError(
                f"Consul answered, but the catalog does not show the result of: {what}; nothing is assumed done",
                operation="GET /v1/catalog/node",
            ),
            unconfirmed,
        )


def _shows(there: AgentService | None, action: Action) -> bool:
    """Whether what Consul (the agent or the catalog) shows is the action's result: gone after a delete, else
    there with the hash of what was applied."""
    if action.op == "delete":
        return there is None
    if there is None:
        return False
    return action.service is None or dict(there.meta).get(HASH_KEY) == action.service.recorded_digest


def external_ops(action: Action) -> list[dict[str, Any]]:
    """The catalog operations of one action on an external node's service."""
    spec = action.service
    if spec is None:
        return []
    node = spec.node
    if action.op == "delete":
        return [{"Service": {"Verb": "delete", "Node": node, "Service": {"ID": spec.service_id, "Service": spec.name}}}]
    ops: list[dict[str, Any]] = [
        {"Node": {"Verb": "set", "Node": {"Node": node, "Address": spec.node_address, "Meta": dict(spec.node_meta)}}},
        {"Service": {"Verb": "set", "Node": node, "Service": spec.catalog_service()}},
    ]
    before = action.found.seen_checks if action.found is not None else None
    existing = {c.check_id: c for c in before or ()}
    for check in spec.checks:
        fields = check.fields()
        body: dict[str, Any] = {"Node": node, "CheckID": check.check_id, "ServiceID": spec.service_id}
        body["Name"] = fields.pop("Name", check.check_id)
        body["Notes"] = fields.pop("Notes", "")
        status = fields.pop("Status", None)
        seen = existing.get(check.check_id)
        body["Status"] = seen.status if seen is not None and seen.status else (status or "critical")
        body["Definition"] = fields
        ops.append({"Check": {"Verb": "set", "Check": body}})
    wanted = {c.check_id for c in spec.checks}
    for check_id in sorted(set(existing) - wanted):
        ops.append({"Check": {"Verb": "delete", "Check": {"Node": node, "CheckID": check_id}}})
    return ops


def _apply_local(client: ConsulClient, owner: str, actions: list[Action], done: Callable[[Action], None]) -> None:
    """Registrations (creates, updates, adoptions) up to PARALLEL_REGISTRATIONS at a time (the agent has no batch
    form, and each waits for its catalog sync), then removals; then one read of the agent confirms every one: an
    answer of 200 is not proof that the agent registered anything (a proxy can say 200)."""
    registrations = [a for a in actions if a.op != "delete"]
    removals = [a for a in actions if a.op == "delete"]
    for group in (registrations, removals):
        if not group:
            continue
        with ThreadPoolExecutor(max_workers=min(PARALLEL_REGISTRATIONS, len(group))) as pool:
            outcomes = list(pool.map(lambda a: _service_write(client, a), group))
        failed = [(a, err) for a, err in zip(group, outcomes, strict=True) if err is not None]
        if failed:
            for action, err in zip(group, outcomes, strict=True):
                if err is None:
                    done(action)
            raise _StepFailed(failed[0][1], [a for a, _ in failed])
    unconfirmed = _unconfirmed(client, owner, actions)
    for action in actions:
        if action not in unconfirmed:
            done(action)
    if unconfirmed:
        what = ", ".join(f"{a.op} {a.target}" for a in unconfirmed)
        cause = ConsulRequestError(
            f"Consul answered, but does not show the result of: {what}; nothing is assumed done",
            operation="GET /v1/agent/services",
        )
        raise _StepFailed(cause, unconfirmed)


def _service_write(client: ConsulClient, action: Action) -> ConsulError | None:
    try:
        if action.op == "delete":
            client.deregister_service(action.target)
        elif action.service is not None:
            client.register_service(action.service.payload())
    except ConsulError as err:
        return err
    return None


def _unconfirmed(client: ConsulClient, owner: str, actions: list[Action]) -> list[Action]:
    """The actions whose result the agent does not show: a registration absent or with another hash, a removal
    still there."""
    now = client.agent_services(services_filter(owner, (a.target for a in actions)))
    return [action for action in actions if not _shows(now.get(action.target), action)]
