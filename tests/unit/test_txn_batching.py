"""Transactions without a network: batching under the op limit, journals, a 413 learnt, a 409 mapped to its action."""

from __future__ import annotations

import re

from manifest_runner.converge.apply import execute, kv_batches
from manifest_runner.converge.planner import plan
from manifest_runner.converge.state import DesiredState, KVEntry, ObservedState
from manifest_runner.marks import journal_prefix, record_key
from tests.unit.scripted import Sent, answer, client_with

AGENT = {"Config": {"Version": "1.8.7", "NodeName": "n1", "Datacenter": "dc1"}}


def desired(count: int, owner: str = "o") -> DesiredState:
    entries = tuple(KVEntry(f"app/k{i:04d}", b"v", 0xC0DE0001, "enforce") for i in range(count))
    return DesiredState(owner=owner, kv=entries)


def consul_like_txn(limit: int = 64, refuse_index: int | None = None):
    """A handler for /v1/txn that answers every op with an index, refuses more than ``limit`` ops with a 413, and
    optionally rolls back the first transaction with a 409 on op ``refuse_index``."""
    transactions: list[list[dict]] = []
    counter = iter(range(1000, 100000))

    def handle(request: Sent):
        if request.path == "/v1/agent/self":
            return answer(200, AGENT)
        ops = request.json()
        if len(ops) > limit:
            return answer(413, raw=f"Transaction contains too many operations ({len(ops)} > {limit})".encode())
        if refuse_index is not None and not transactions:
            transactions.append(ops)
            return answer(409, {"Errors": [{"OpIndex": refuse_index, "What": "failed to set key"}], "Results": None})
        transactions.append(ops)
        results = []
        for op in ops:
            if op["KV"]["Verb"] in ("cas", "set"):
                index = next(counter)
                results.append({"KV": {"Key": op["KV"]["Key"], "CreateIndex": index, "ModifyIndex": index}})
        return answer(200, {"Results": results, "Errors": None})

    return handle, transactions


def keys_written(transactions: list[list[dict]]) -> list[str]:
    return [op["KV"]["Key"] for ops in transactions for op in ops if op["KV"]["Key"].startswith("app/")]


def test_batches_respect_the_op_limit_and_the_body_budget() -> None:
    actions = plan(desired(300), ObservedState("o")).actions
    batches = kv_batches(actions, 64)
    assert [a for batch in batches for a in batch] == list(actions)  # order kept, nothing lost
    assert all(len(batch) <= 63 for batch in batches[:-1]) and len(batches[-1]) <= 62
    small = kv_batches(actions, 64, body_budget=2_000)
    assert all(sum(120 + 6 * len(a.target) + 4 for a in batch) <= 2_000 for batch in small if len(batch) > 1)


def test_a_large_apply_journals_every_batch_and_writes_the_record_last() -> None:
    handle, transactions = consul_like_txn()
    client, _ = client_with(handle)
    report = execute(client, plan(desired(150), ObservedState("o")))
    assert report.ok and report.record_written
    assert sorted(keys_written(transactions)) == [f"app/k{i:04d}" for i in range(150)]  # each key exactly once
    assert all(len(ops) <= 64 for ops in transactions)
    *middle, last = transactions
    assert middle and all(any(op["KV"]["Key"].startswith(journal_prefix("o")) for op in ops) for ops in middle)
    verbs = {(op["KV"]["Verb"], op["KV"]["Key"]) for op in last}
    assert ("cas", record_key("o")) in verbs and ("delete-tree", journal_prefix("o")) in verbs


def test_a_lower_server_limit_is_learnt_from_its_413() -> None:
    handle, transactions = consul_like_txn(limit=20)
    client, _ = client_with(handle)
    report = execute(client, plan(desired(100), ObservedState("o")))
    assert report.ok, report.error
    assert client.op_limit() == 20
    assert sorted(keys_written(transactions)) == [f"app/k{i:04d}" for i in range(100)]
    assert all(len(ops) <= 20 for ops in transactions)


def test_a_rolled_back_transaction_names_the_failing_action_and_skips_the_rest() -> None:
    handle, _ = consul_like_txn(refuse_index=2)
    client, _ = client_with(handle)
    current = plan(desired(5), ObservedState("o"))
    report = execute(client, current)
    assert not report.ok
    failed = [r for r in report.results if r.status == "failed"]
    assert [r.action.target for r in failed] == [current.actions[2].target]
    assert re.search(r"op 2: failed to set key", failed[0].error or "")
    assert {r.status for r in report.results} == {"failed", "skipped"}
    assert not report.record_written
