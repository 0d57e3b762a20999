"""The lock-and-replan loop without a network: a compare-and-set that loses a race is read and planned again."""

from __future__ import annotations

from manifest_runner.converge.reconcile import converge
from manifest_runner.converge.state import DesiredState, KVEntry
from manifest_runner.marks import lock_key
from tests.unit.scripted import Sent, answer, client_with

AGENT = {"Config": {"Version": "1.8.7", "NodeName": "n1", "Datacenter": "dc1"}}


def scripted_agent(lost_races: int, lock_moved: bool = False):
    """Answers observation, lock and transaction requests; the first ``lost_races`` write transactions roll back.
    ``lock_moved``: the lock key changed after the observation (another applier took and released it), so the
    transaction that takes the lock only if it did not move fails."""
    state = {"writes": 0, "observations": 0, "lock_txns": 0}

    def transaction(ops):
        if all(op["KV"]["Verb"] == "get-tree" for op in ops):
            return answer(200, {"Results": [], "Errors": None})
        if [op["KV"]["Verb"] for op in ops] == ["check-not-exists", "lock"]:
            state["lock_txns"] += 1
            if lock_moved:
                return answer(409, {"Errors": [{"OpIndex": 0, "What": "key exists"}], "Results": None})
            return answer(200, {"Results": None, "Errors": None})
        state["writes"] += 1
        if state["writes"] <= lost_races:
            return answer(409, {"Errors": [{"OpIndex": 0, "What": "cas failed"}], "Results": None})
        results = [
            {"KV": {"Key": op["KV"]["Key"], "CreateIndex": 7, "ModifyIndex": 7}}
            for op in ops
            if op["KV"]["Verb"] == "cas"
        ]
        return answer(200, {"Results": results, "Errors": None})

    def handle(request: Sent):
        if request.path == "/v1/agent/self":
            return answer(200, AGENT)
        if request.path == "/v1/agent/services":
            state["observations"] += 1
            return answer(200, {})
        if request.path == "/v1/agent/checks":
            return answer(200, {})
        if request.path == "/v1/catalog/nodes":
            return answer(200, [], index=2)  # no external node registered by consul-manifest
        if request.path.startswith("/v1/kv/") and request.method == "GET":
            return answer(404, index=3)  # the direct reads that prove the tree reads are complete
        if request.path == "/v1/session/create":
            return answer(200, {"ID": "session-1"})
        if request.path.startswith("/v1/session/"):
            return answer(200, [{"ID": "session-1"}])
        if request.path == f"/v1/kv/{lock_key('o')}":
            return answer(200, True)
        if request.path == "/v1/txn":
            return transaction(request.json())
        return answer(404)

    return handle, state


DESIRED = DesiredState(owner="o", kv=(KVEntry("app/a", b"1", 0xC0DE0001, "enforce"),))


def test_a_lost_race_is_replanned_under_the_lock_and_applied() -> None:
    handle, state = scripted_agent(lost_races=1)
    client, transport = client_with(handle)
    outcome = converge(client, DESIRED, lock_timeout=1)
    assert outcome.report is not None and outcome.report.ok, outcome.report
    assert outcome.report.attempts == 2
    assert state["writes"] == 2
    # before the lock; the lock key had not moved, so the first attempt used that plan; observed again after the
    # lost race
    assert state["observations"] == 2
    assert transport.paths("PUT").count("/v1/session/destroy/session-1") == 1  # the lock was released


def test_a_lock_key_that_moved_since_the_observation_means_observing_again() -> None:
    handle, state = scripted_agent(lost_races=0, lock_moved=True)
    client, transport = client_with(handle)
    outcome = converge(client, DESIRED, lock_timeout=1)
    assert outcome.report is not None and outcome.report.ok, outcome.report
    assert state["lock_txns"] == 1  # tried, refused: then taken the ordinary way
    assert [s for s in transport.sent if s.method == "PUT" and "acquire" in s.params]  # the ordinary acquire
    assert state["observations"] == 2  # before the lock and under it: another applier may have written


def test_an_unmoved_lock_key_spares_the_second_observation() -> None:
    handle, state = scripted_agent(lost_races=0)
    client, transport = client_with(handle)
    outcome = converge(client, DESIRED, lock_timeout=1)
    assert outcome.report is not None and outcome.report.ok
    assert state["lock_txns"] == 1 and state["observations"] == 1
    assert not [s for s in transport.sent if s.method == "PUT" and "acquire" in s.params]  # no ordinary acquire


def test_it_gives_up_after_the_last_attempt() -> None:
    handle, state = scripted_agent(lost_races=10)
    client, _ = client_with(handle)
    outcome = converge(client, DESIRED, lock_timeout=1, attempts=3)
    assert outcome.report is not None and not outcome.report.ok
    assert state["writes"] == 3


def test_nothing_to_do_takes_no_lock() -> None:
    handle, _ = scripted_agent(lost_races=0)
    client, transport = client_with(handle)
    outcome = converge(client, DesiredState(owner="o"))
    assert outcome.report is None
    assert "/v1/session/create" not in transport.paths()
