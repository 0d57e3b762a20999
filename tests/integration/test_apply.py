"""plan / apply / prune / destroy against a real agent, as a pipeline runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from manifest_runner.cli import EXIT_CHANGES, EXIT_FAILED, EXIT_OK
from manifest_runner.config import ConsulConfig
from manifest_runner.consul import kvcodec
from manifest_runner.consul.client import ConsulClient
from manifest_runner.converge.desired import desired_state
from manifest_runner.converge.reconcile import converge
from manifest_runner.converge.state import OwnershipRecord
from manifest_runner.manifest.loader import load_manifests
from manifest_runner.testing.devagent import DevAgent
from tests.integration.helpers import (
    checks,
    indexes,
    kv_delete,
    kv_entry,
    kv_put,
    kv_value,
    register,
    run_cli,
    services,
    write,
)

pytestmark = pytest.mark.consul


def manifest(
    owner: str,
    *,
    tag: str = "v1",
    port: int = 8080,
    interval: str = "10s",
    ttl_value: int = 3600,
    extra_service: bool = True,
    extra_key: bool = True,
    prune: bool = False,
) -> str:
    second = (
        f"""
  - name: {owner}-worker
    id: {owner}-worker-1
    checks:
      - ttl: 1m
"""
        if extra_service
        else ""
    )
    extra = "    old/setting: keep-me\n" if extra_key else ""
    return f"""
version: 1
owner: {owner}
prune: {str(prune).lower()}
services:
  - name: {owner}-api
    id: {owner}-api-1
    address: 127.0.0.1
    port: {port}
    tags: [api, {tag}]
    meta: {{version: "{tag}"}}
    weights: {{passing: 5, warning: 1}}
    checks:
      - http: http://127.0.0.1:{port}/health
        interval: {interval}
        timeout: 1s
        deregister_critical_after: 2m
      - tcp: 127.0.0.1:{port}
        interval: 15s{second}
kv:
  prefix: {owner}/
  seed:
    pool_size: 20
  enforce:
    cache/ttl: {ttl_value}
{extra}"""


def test_create_update_noop_prune_and_destroy(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    owner = f"app-{unique}"
    path = write(tmp_path, "m.yaml", manifest(owner))

    first = run_cli(consul, "apply", str(path))
    assert first.exit_code == EXIT_OK, first.output
    assert f"+ service {owner}-api-1: created" in first.output
    assert f"{owner}: 5 created, 0 updated, 0 deleted" in first.output
    registered = services(consul)[f"{owner}-api-1"]
    assert registered["Tags"] == ["api", "v1"]
    assert registered["Port"] == 8080
    assert registered["Weights"] == {"Passing": 5, "Warning": 1}
    assert registered["Meta"]["managed-by"] == "consul-manifest"
    assert registered["Meta"]["manifest-owner"] == owner
    assert registered["Meta"]["version"] == "v1"
    api_checks = {k: v for k, v in checks(consul).items() if v["ServiceID"] == f"{owner}-api-1"}
    assert set(api_checks) == {f"service:{owner}-api-1:1", f"service:{owner}-api-1:2"}
    assert kv_value(consul, f"{owner}/pool_size") == b"20"
    assert kv_value(consul, f"{owner}/cache/ttl") == b"3600"

    # no-op
    again = run_cli(consul, "apply", str(path))
    assert again.exit_code == EXIT_OK
    assert f"{owner}: no changes" in again.output

    # update: tag, meta, port, check interval, KV value
    write(tmp_path, "m.yaml", manifest(owner, tag="v2", port=9090, interval="30s", ttl_value=60))
    plan = run_cli(consul, "plan", str(path))
    assert f"~ service {owner}-api-1  (manifest changed)" in plan.output
    assert 'tags: ["api", "v1"] -> ["api", "v2"]' in plan.output
    assert "port: 8080 -> 9090" in plan.output
    assert 'meta.version: "v1" -> "v2"' in plan.output
    assert f"~ kv {owner}/cache/ttl: 3600 -> 60  (manifest changed)" in plan.output
    assert 'checks[http http://127.0.0.1:9090/health].http: "http://127.0.0.1:8080/health" ->' in plan.output
    assert 'checks[http http://127.0.0.1:9090/health].interval: "10s" -> "30s"' in plan.output
    updated = run_cli(consul, "apply", str(path))
    assert updated.exit_code == EXIT_OK, updated.output
    assert f"{owner}: 0 created, 2 updated, 0 deleted" in updated.output
    registered = services(consul)[f"{owner}-api-1"]
    assert (registered["Tags"], registered["Port"], registered["Meta"]["version"]) == (["api", "v2"], 9090, "v2")
    assert {c["Type"] for c in checks(consul).values() if c["ServiceID"] == f"{owner}-api-1"} == {"http", "tcp"}
    assert kv_value(consul, f"{owner}/cache/ttl") == b"60"

    # a check interval alone is a change too, shown field by field (Consul 1.8's agent API does not show check
    # definitions: the ones last applied are kept in the service's meta)
    hash_before = services(consul)[f"{owner}-api-1"]["Meta"]["manifest-hash"]
    write(tmp_path, "m.yaml", manifest(owner, tag="v2", port=9090, interval="45s", ttl_value=60))
    plan = run_cli(consul, "plan", str(path))
    assert f"~ service {owner}-api-1  (manifest changed)" in plan.output
    assert 'checks[http http://127.0.0.1:9090/health].interval: "30s" -> "45s"' in plan.output
    assert hash_before not in plan.output  # no hashes in a plan a person reads
    assert run_cli(consul, "apply", str(path)).exit_code == EXIT_OK
    assert services(consul)[f"{owner}-api-1"]["Meta"]["manifest-hash"] != hash_before
    assert run_cli(consul, "plan", "--detailed-exitcode", str(path)).exit_code == EXIT_OK

    # removed from the manifest: kept without prune, removed with it
    write(
        tmp_path,
        "m.yaml",
        manifest(owner, tag="v2", port=9090, interval="45s", ttl_value=60, extra_service=False, extra_key=False),
    )
    assert f"= service {owner}-worker-1  (kept" in run_cli(consul, "plan", str(path)).output
    kept = run_cli(consul, "apply", str(path))
    assert f"{owner}: no changes" in kept.output
    assert f"= kv {owner}/old/setting  (kept: no longer declared; --prune removes it)" in kept.output
    assert f"{owner}-worker-1" in services(consul)
    pruned = run_cli(consul, "apply", "--prune", str(path))
    assert pruned.exit_code == EXIT_OK, pruned.output
    assert f"- service {owner}-worker-1: deleted" in pruned.output
    assert f"- kv {owner}/old/setting: deleted" in pruned.output
    assert f"{owner}-worker-1" not in services(consul)
    assert kv_value(consul, f"{owner}/old/setting") is None

    destroyed = run_cli(consul, "destroy", "--yes", str(path))
    assert destroyed.exit_code == EXIT_OK, destroyed.output
    assert not any(s.startswith(owner) for s in services(consul))
    for key in ("pool_size", "cache/ttl"):
        assert kv_value(consul, f"{owner}/{key}") is None
    assert kv_value(consul, f"consul-manifest/owners/{owner}") is None


def test_prune_in_the_manifest_itself(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    owner = f"p-{unique}"
    path = write(tmp_path, "m.yaml", manifest(owner))
    assert run_cli(consul, "apply", str(path)).exit_code == EXIT_OK
    write(tmp_path, "m.yaml", manifest(owner, extra_service=False, extra_key=False, prune=True))
    result = run_cli(consul, "apply", str(path))
    assert f"{owner}: 0 created, 0 updated, 2 deleted" in result.output


def test_an_unchanged_apply_sends_no_write(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    owner = f"noop-{unique}"
    path = write(tmp_path, "m.yaml", manifest(owner))
    assert run_cli(consul, "apply", str(path)).exit_code == EXIT_OK
    before = indexes(consul)
    client = ConsulClient(ConsulConfig.from_sources({"http_addr": consul.http_addr}, {}))
    desired = desired_state(owner, [load_manifests([path], {}).manifests[0].manifest])
    outcome = converge(client, desired)
    assert outcome.report is None
    assert not outcome.plan.has_changes
    # reads only: the owner's lock key (first: see ObservedState.lock_seen_free), the agent's services and checks,
    # the external nodes this tool registered, one read-only transaction, and the direct reads that prove the
    # transaction saw everything (the record, and each KV root: here one)
    assert client.request_counts() == {"GET": 6, "PUT": 1}
    assert client.request_counts(by_path=True)["PUT /v1/txn"] == 1
    assert run_cli(consul, "apply", str(path)).exit_code == EXIT_OK
    assert indexes(consul) == before


def test_foreign_services_and_keys_are_never_touched(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    owner = f"own-{unique}"
    foreign_key = f"{owner}/operator/secret"
    kv_put(consul, foreign_key, "do-not-touch")
    register(consul, {"ID": f"{owner}-api-foreign", "Name": f"{owner}-api", "Port": 1234, "Tags": ["theirs"]})
    foreign_before = (kv_entry(consul, foreign_key), services(consul)[f"{owner}-api-foreign"])

    path = write(tmp_path, "m.yaml", manifest(owner))
    for args in (["apply"], ["apply", "--prune"], ["destroy", "--yes"]):
        result = run_cli(consul, *args, str(path))
        assert result.exit_code == EXIT_OK, result.output
        assert (kv_entry(consul, foreign_key), services(consul)[f"{owner}-api-foreign"]) == foreign_before


def test_a_foreign_service_with_a_wanted_id_is_a_conflict(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    owner = f"conf-{unique}"
    register(consul, {"ID": f"{owner}-api-1", "Name": "someone-elses", "Port": 1})
    kv_put(consul, f"{owner}/cache/ttl", "theirs")
    path = write(tmp_path, "m.yaml", manifest(owner))
    plan = run_cli(consul, "plan", str(path))
    assert plan.exit_code == EXIT_FAILED
    assert f"! service {owner}-api-1: CONFLICT: id is registered by someone else" in plan.output
    assert f"! kv {owner}/cache/ttl: CONFLICT: exists and was not created by this owner" in plan.output
    result = run_cli(consul, "apply", str(path))
    assert result.exit_code == EXIT_FAILED
    assert "not applied: 2 conflicts" in result.output
    assert services(consul)[f"{owner}-api-1"]["Service"] == "someone-elses"
    assert kv_value(consul, f"{owner}/cache/ttl") == b"theirs"
    assert kv_value(consul, f"{owner}/pool_size") is None  # nothing at all was written


def test_seed_keys_keep_operator_changes_and_enforce_keys_are_reverted(
    consul: DevAgent, tmp_path: Path, unique: str
) -> None:
    owner = f"seed-{unique}"
    path = write(tmp_path, "m.yaml", manifest(owner))
    assert run_cli(consul, "apply", str(path)).exit_code == EXIT_OK
    kv_put(consul, f"{owner}/pool_size", "50")
    kv_put(consul, f"{owner}/cache/ttl", "1")
    plan = run_cli(consul, "plan", "--detailed-exitcode", str(path))
    assert plan.exit_code == EXIT_CHANGES
    assert f"~ kv {owner}/cache/ttl" in plan.output
    assert "pool_size" not in plan.output
    assert run_cli(consul, "apply", str(path)).exit_code == EXIT_OK
    assert kv_value(consul, f"{owner}/pool_size") == b"50"
    assert kv_value(consul, f"{owner}/cache/ttl") == b"3600"
    # a seed key deleted by an operator is seeded again
    kv_delete(consul, f"{owner}/pool_size")
    assert run_cli(consul, "apply", str(path)).exit_code == EXIT_OK
    assert kv_value(consul, f"{owner}/pool_size") == b"20"


def test_a_key_recreated_by_someone_else_is_no_longer_ours(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    owner = f"re-{unique}"
    path = write(tmp_path, "m.yaml", manifest(owner))
    assert run_cli(consul, "apply", str(path)).exit_code == EXIT_OK
    kv_delete(consul, f"{owner}/old/setting")
    kv_put(consul, f"{owner}/old/setting", "someone else's now")
    write(tmp_path, "m.yaml", manifest(owner, extra_key=False))
    result = run_cli(consul, "apply", "--prune", str(path))
    assert result.exit_code == EXIT_OK, result.output
    assert kv_value(consul, f"{owner}/old/setting") == b"someone else's now"


def test_plan_apply_plan_detailed_exitcodes(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    path = write(tmp_path, "m.yaml", manifest(f"ex-{unique}"))
    assert run_cli(consul, "plan", "--detailed-exitcode", str(path)).exit_code == EXIT_CHANGES
    assert run_cli(consul, "apply", str(path)).exit_code == EXIT_OK
    assert run_cli(consul, "plan", "--detailed-exitcode", str(path)).exit_code == EXIT_OK


def test_plan_as_json(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    path = write(tmp_path, "m.yaml", manifest(f"js-{unique}"))
    result = run_cli(consul, "plan", "--output", "json", str(path))
    document = json.loads(result.output)
    assert document["changes"] is True
    (owner_plan,) = document["owners"]
    assert document["format_version"] == 1 and document["command"] == "plan"
    assert owner_plan["counts"] == {"create": 5, "update": 0, "delete": 0, "adopt": 0, "conflict": 0, "kept": 0}
    assert {a["cause"] for a in owner_plan["actions"]} == {"manifest"}
    assert {a["target"] for a in owner_plan["actions"]} >= {f"js-{unique}-api-1", f"js-{unique}/cache/ttl"}


def test_dry_run_writes_nothing(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    path = write(tmp_path, "m.yaml", manifest(f"dry-{unique}"))
    before = indexes(consul)
    result = run_cli(consul, "apply", "--dry-run", str(path))
    assert result.exit_code == EXIT_OK
    assert "dry run: nothing was applied" in result.output
    assert indexes(consul) == before


TYPED = {
    "int": 5432,
    "float": 1.5,
    "bool": True,
    "number_as_text": "5432",
    "list": [1, "a", False],
    "map": {"a": {"b": [1, 2]}},
    "empty": "",
    "unicode": "héllo ✓",
    "zero": 0,
    "negative": -3,
}


def test_typed_values_read_back_identical(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    owner = f"typed-{unique}"
    body = "\n".join(f"    {key}: {json.dumps(value)}" for key, value in TYPED.items())
    path = write(tmp_path, "m.yaml", f"version: 1\nowner: {owner}\nkv:\n  prefix: {owner}/\n  enforce:\n{body}\n")
    assert run_cli(consul, "apply", str(path)).exit_code == EXIT_OK
    for key, value in TYPED.items():
        entry = kv_entry(consul, f"{owner}/{key}")
        assert entry is not None
        decoded = kvcodec.decode(entry["Value"], entry["Flags"])
        assert decoded == value and type(decoded) is type(value), key
    assert run_cli(consul, "plan", "--detailed-exitcode", str(path)).exit_code == EXIT_OK


def test_many_keys_go_in_transactions_under_the_op_limit(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    owner = f"big-{unique}"
    body = "\n".join(f"    k{i:03d}: {i}" for i in range(150))
    path = write(tmp_path, "m.yaml", f"version: 1\nowner: {owner}\nkv:\n  prefix: {owner}/\n  enforce:\n{body}\n")
    client = ConsulClient(ConsulConfig.from_sources({"http_addr": consul.http_addr}, {}))
    desired = desired_state(owner, [load_manifests([path], {}).manifests[0].manifest])
    outcome = converge(client, desired)
    assert outcome.report is not None and outcome.report.ok
    assert client.op_limit() == 64  # Consul 1.8
    # PUTs: the read-only tree transaction (the lock key read with it, first); the session, and the lock taken by
    # a transaction that proves the key did not move since (so nobody applied meanwhile: no second observation);
    # ceil(150 / 63) = 3 write transactions; release and session destroy
    assert client.request_counts()["PUT"] == 1 + 2 + 3 + 2
    assert kv_value(consul, f"{owner}/k149") == b"149"
    # the record names every key with the create index Consul gave it (0: "the record's own ModifyIndex")
    entry = kv_entry(consul, f"consul-manifest/owners/{owner}")
    assert entry is not None
    record = OwnershipRecord.decode(owner, entry["Value"], entry["ModifyIndex"])
    assert len(record.keys) == 150
    for key, create_index in record.keys.items():
        found = kv_entry(consul, key)
        assert found is not None and found["CreateIndex"] == create_index, key


def test_an_applier_that_ran_between_observation_and_lock_is_seen(
    consul: DevAgent, tmp_path: Path, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first plan is used under the lock only when the lock key did not move since it was read; here another
    applier of the same owner changes the service after our observation, and our apply still ends as its manifest
    says (a plan that stood on the old observation would have left the other applier's service in place)."""
    from manifest_runner.converge import reconcile

    owner = f"race-{unique}"
    ours = f"version: 1\nowner: {owner}\nservices:\n  - {{name: {owner}, port: 1, tags: [ours]}}\n"
    ours_path = write(tmp_path, "ours.yaml", ours + f"kv:\n  prefix: {owner}/\n  enforce:\n    a: 1\n")
    (tmp_path / "theirs").mkdir()
    theirs_path = write(tmp_path / "theirs", "m.yaml", ours.replace("[ours]", "[theirs]"))
    client = ConsulClient(ConsulConfig.from_sources({"http_addr": consul.http_addr}, {}))

    def desired(path: Path):  # type: ignore[no-untyped-def]
        return desired_state(owner, [load_manifests([path], {}).manifests[0].manifest])

    assert converge(client, desired(ours_path)).report is not None
    ours_path.write_text(ours + f"kv:\n  prefix: {owner}/\n  enforce:\n    a: 2\n")  # only the key changes
    real_plan, calls = reconcile.plan, []

    def plan_then_race(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        made = real_plan(*args, **kwargs)
        if len(calls) == 1:  # between our observation and our lock: the other applier, start to end
            monkeypatch.setattr(reconcile, "plan", real_plan)
            assert converge(client, desired(theirs_path), policy=reconcile.DEFAULT_POLICY).report is not None
            monkeypatch.setattr(reconcile, "plan", plan_then_race)
        return made

    monkeypatch.setattr(reconcile, "plan", plan_then_race)
    outcome = converge(client, desired(ours_path))
    assert outcome.report is not None and outcome.report.ok
    assert kv_value(consul, f"{owner}/a") == b"2"
    mine = [s for s in services(consul).values() if s["Service"] == owner]
    assert [s["Tags"] for s in mine] == [["ours"]], mine
