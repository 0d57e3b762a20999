"""An apply cut off halfway (Consul went away between two transactions) loses nothing: every key written so far is
claimed in the journal, the next apply consolidates it, and prune and destroy still know every key."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

from manifest_runner.config import ConsulConfig
from manifest_runner.consul.client import ConsulClient
from manifest_runner.consul.payloads import KVPair
from manifest_runner.converge.apply import PARALLEL_TRANSACTIONS
from manifest_runner.converge.desired import desired_state
from manifest_runner.converge.reconcile import converge
from manifest_runner.errors import ConsulUnavailable
from manifest_runner.manifest.loader import load_manifests
from manifest_runner.testing.devagent import DevAgent
from tests.integration.helpers import call, kv_value, run_cli, write

pytestmark = pytest.mark.consul
KEYS = 400  # seven transactions on Consul 1.8: six journalled ones and the last
WRITES = {"set", "cas", "delete", "delete-cas", "delete-tree"}


class FailingAfter(ConsulClient):
    """The real client, whose transport gives out after ``writes`` write transactions (a fault we inject into our
    own code, not a stand-in for Consul: every request that is sent goes to the real agent)."""

    def __init__(self, settings: ConsulConfig, writes: int) -> None:
        super().__init__(settings)
        self.left = writes
        self.guard = threading.Lock()  # transactions run in parallel threads

    def txn(self, ops: list[dict[str, Any]], *, idempotent: bool = False) -> list[KVPair]:
        if any(op["KV"]["Verb"] in WRITES for op in ops):  # not reads, nor the transaction that takes the lock
            with self.guard:
                if self.left <= 0:
                    raise ConsulUnavailable("injected: connection lost", operation="PUT /v1/txn")
                self.left -= 1
        return super().txn(ops, idempotent=idempotent)


def test_an_interrupted_apply_is_completed_by_the_next(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    owner = f"cut-{unique}"
    body = "\n".join(f"    k{i:03d}: {i}" for i in range(KEYS))
    path = write(tmp_path, "m.yaml", f"version: 1\nowner: {owner}\nkv:\n  prefix: {owner}/\n  enforce:\n{body}\n")
    desired = desired_state(owner, [load_manifests([path], {}).manifests[0].manifest])
    settings = ConsulConfig.from_sources({"http_addr": consul.http_addr}, {})

    outcome = converge(FailingAfter(settings, writes=2), desired)
    report = outcome.report
    assert report is not None and not report.ok
    assert isinstance(report.error, ConsulUnavailable)
    done = [r.action.target for r in report.results if r.status == "done"]
    assert 63 <= len(done) <= 63 * PARALLEL_TRANSACTIONS
    assert report.count("failed") >= 1 and report.count("skipped") >= 1
    for key in done:
        assert kv_value(consul, key) is not None
    _, _, journal = call(consul, "GET", f"/v1/kv/consul-manifest/owners/{owner}.journal/?keys")
    assert len(journal) == 2
    assert kv_value(consul, f"consul-manifest/owners/{owner}") is None  # the record comes last

    plan = run_cli(consul, "plan", "--output", "json", str(path))
    (owner_plan,) = json.loads(plan.output)["owners"]
    assert owner_plan["counts"]["create"] == KEYS - len(done)  # what the journal claims is known as ours

    assert run_cli(consul, "apply", str(path)).exit_code == 0
    record = json.loads(kv_value(consul, f"consul-manifest/owners/{owner}") or b"{}")
    assert len(record["keys"]) == KEYS
    status, _, _ = call(consul, "GET", f"/v1/kv/consul-manifest/owners/{owner}.journal/?keys")
    assert status == 404  # consolidated

    assert run_cli(consul, "destroy", "--yes", str(path)).exit_code == 0
    status, _, _ = call(consul, "GET", f"/v1/kv/{owner}/?keys")
    assert status == 404


def test_a_crash_right_after_the_journal_keeps_prune_exact(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    owner = f"cut2-{unique}"
    body = "\n".join(f"    k{i:03d}: {i}" for i in range(KEYS))
    path = write(tmp_path, "m.yaml", f"version: 1\nowner: {owner}\nkv:\n  prefix: {owner}/\n  enforce:\n{body}\n")
    desired = desired_state(owner, [load_manifests([path], {}).manifests[0].manifest])
    settings = ConsulConfig.from_sources({"http_addr": consul.http_addr}, {})
    converge(FailingAfter(settings, writes=1), desired)
    write(tmp_path, "m.yaml", f"version: 1\nowner: {owner}\nkv:\n  prefix: {owner}/\n  enforce: {{k000: 0}}\n")
    result = run_cli(consul, "apply", "--prune", str(path))
    assert result.exit_code == 0, result.output
    _, _, keys = call(consul, "GET", f"/v1/kv/{owner}/?keys")
    assert keys == [f"{owner}/k000"]


def test_a_server_op_limit_below_the_assumed_one_is_learnt_from_its_413(
    consul: DevAgent, tmp_path: Path, unique: str
) -> None:
    """Consul 1.8 takes 64 operations a transaction. A client that assumed 128 (as for Consul >= 1.14) gets a 413
    naming the limit, which rolls nothing back because nothing was applied: it splits and goes on."""
    owner = f"limit-{unique}"
    body = "\n".join(f"    k{i:03d}: {i}" for i in range(200))
    path = write(tmp_path, "m.yaml", f"version: 1\nowner: {owner}\nkv:\n  prefix: {owner}/\n  enforce:\n{body}\n")
    desired = desired_state(owner, [load_manifests([path], {}).manifests[0].manifest])
    client = ConsulClient(ConsulConfig.from_sources({"http_addr": consul.http_addr}, {}))
    client._op_limit = 128  # what the version of a newer server would have said
    outcome = converge(client, desired)
    assert outcome.report is not None and outcome.report.ok, outcome.report
    assert client.op_limit() == 64  # learnt from "Transaction contains too many operations (128 > 64)"
    assert kv_value(consul, f"{owner}/k199") == b"199"
    assert run_cli(consul, "plan", "--detailed-exitcode", str(path)).exit_code == 0
