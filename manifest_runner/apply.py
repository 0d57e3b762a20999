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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from manifest_runner.consul.client import TXN_BODY_LIMIT, ConsulClient, TxnFailed, TxnTooLarge, txn_op_size
from manifest_runner.consul.observe import record_key
from manifest_runner.errors import ConsulError
from manifest_runner.plan import Action, Plan
from manifest_runner.state import OwnershipRecord

Status = Literal["done", "failed", "skipped"]
BODY_BUDGET = int(TXN_BODY_LIMIT * 0.9)


@dataclass(frozen=True, slots=True)
class ActionResult:
    action: Action
    status: Status
    error: str | None = None

    def line(self) -> str:
        symbol = {"create": "+", "update": "~", "delete": "-", "conflict": "!"}[self.action.op]
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
    return {"create": "created", "update": "updated", "delete": "deleted", "conflict": "conflict"}[op]


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


def kv_batches(actions: Sequence[Action], op_limit: int, body_budget: int = BODY_BUDGET) -> list[list[Action]]:
    """Split KV actions into transactions of at most ``op_limit - 1`` operations (one slot is kept for the
    ownership record) and ``body_budget`` bytes. Pure; order kept."""
    batches: list[list[Action]] = [[]]
    size = 0
    for action in actions:
        op_size = txn_op_size(kv_op(action))
        if batches[-1] and (len(batches[-1]) >= op_limit - 1 or size + op_size > body_budget):
            batches.append([])
            size = 0
        batches[-1].append(action)
        size += op_size
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
        kv_actions = [a for a in plan.actions if a.kind == "kv"]
        if kv_actions or plan.record_changes:
            _apply_kv(client, plan, kv_actions, done)
        for action in (a for a in plan.actions if a.kind == "service"):
            try:
                _apply_service(client, action)
            except ConsulError as err:
                raise _StepFailed(err, [action]) from None
            done(action)
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
    owned: dict[str, int] = dict(plan.record_before.keys) if plan.record_before else {}
    for key in plan.forgotten:
        owned.pop(key, None)
    record_index = plan.record_before.modify_index if plan.record_before else 0
    key = record_key(plan.owner)
    queue = kv_batches(actions, client.op_limit())
    if not queue[-1] and not plan.record_changes:
        return
    while queue:
        batch = queue.pop(0)
        created = frozenset(a.target for a in batch if a.op == "create")
        after = dict(owned)
        for action in batch:
            if action.op == "create":
                after[action.target] = 0
            elif action.op == "delete":
                after.pop(action.target, None)
        ops = [kv_op(a) for a in batch]
        last = not queue
        if after or not last:
            content = OwnershipRecord(plan.owner, after).encode(created_now=created)
            ops.append({"KV": {"Verb": "cas", "Key": key, "Value": _b64(content), "Index": record_index}})
        elif record_index:
            ops.append({"KV": {"Verb": "delete-cas", "Key": key, "Index": record_index}})
        if not ops:
            continue
        try:
            results = client.txn(ops)
        except TxnTooLarge as err:
            queue = kv_batches(batch, err.limit) + queue
            continue
        except TxnFailed as err:
            culprits = [batch[i] for i, _ in err.errors if 0 <= i < len(batch)] or batch
            raise _StepFailed(err, culprits) from None
        except ConsulError as err:
            raise _StepFailed(err, batch) from None
        indexes = {r["KV"]["Key"]: r["KV"] for r in results if "KV" in r}
        record_index = int(indexes.get(key, {}).get("ModifyIndex", 0))
        for action in batch:
            if action.op == "create":
                after[action.target] = int(indexes.get(action.target, {}).get("CreateIndex", record_index))
        owned = after
        for action in batch:
            done(action)


def _apply_service(client: ConsulClient, action: Action) -> None:
    if action.op == "delete":
        client.deregister_service(action.target)
        return
    if action.service is None:
        raise ValueError(f"service action {action.op} {action.target} carries no registration")
    client.register_service(action.service.payload())
