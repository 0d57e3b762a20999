"""GitOps you can trust, against real agents: owners that cannot collide, reads proven complete, writes verified,
exact plans with causes, apply sets and orphans, saved plans, other writers, import and adopt, owners in parallel."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from manifest_runner.marks import lock_key, record_key, set_key
from manifest_runner.testing.devagent import DevAgent
from tests.conftest import ACL_TOKEN
from tests.faults.proxy import fault_proxy
from tests.integration.helpers import call, kv_put, kv_value, register, run_process, services, write

pytestmark = pytest.mark.consul


def repo(folder: Path, remote: str) -> Path:
    folder.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(folder)], check=True)
    subprocess.run(["git", "-C", str(folder), "remote", "add", "origin", remote], check=True)
    return folder


def keyed(owner: str | None, prefix: str, value: str = "1") -> str:
    head = f"owner: {owner}\n" if owner else ""
    return f"version: 1\n{head}kv:\n  prefix: {prefix}/\n  enforce: {{a: '{value}'}}\n"


def test_two_repositories_cannot_share_an_owner(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    team_a = repo(tmp_path / "a", "https://git.example.com/team-a/infra.git")
    team_b = repo(tmp_path / "b", "git@git.example.com:team-b/infra.git")
    # no owner: the file name would be shared by every repository with a consul.yaml
    implicit = write(team_a, "consul.yaml", keyed(None, f"a-{unique}"))
    result = run_process(consul.http_addr, "apply", str(implicit))
    assert result.returncode == 3
    assert f"{implicit}:1:1: owner:" in result.stderr
    # the same explicit owner from two repositories: the second is refused, naming both, writing nothing
    owner = f"shared-{unique}"
    first = write(team_a, "consul.yaml", keyed(owner, f"a-{unique}"))
    second = write(team_b, "consul.yaml", keyed(owner, f"b-{unique}"))
    assert run_process(consul.http_addr, "apply", str(first)).returncode == 0
    refused = run_process(consul.http_addr, "apply", str(second))
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "git.example.com/team-a/infra" in refused.stdout and "git.example.com/team-b/infra" in refused.stdout
    assert kv_value(consul, f"b-{unique}/a") is None
    # moving the owner on purpose
    assert run_process(consul.http_addr, "apply", "--take-over", str(second)).returncode == 0
    assert kv_value(consul, f"b-{unique}/a") == b"1"
    record = json.loads(kv_value(consul, record_key(owner)) or b"{}")
    assert record["origin"] == {"repo": "git.example.com/team-b/infra", "folder": ""}


def test_reads_that_acls_filter_are_refused_not_planned(consul_acl: DevAgent, tmp_path: Path, unique: str) -> None:
    owner = f"acl-{unique}"
    path = write(tmp_path, "m.yaml", keyed(owner, owner))
    token = {"CONSUL_HTTP_TOKEN": ACL_TOKEN}
    assert run_process(consul_acl.http_addr, "apply", str(path), env=token).returncode == 0
    for command in (["plan", str(path)], ["destroy", "--yes", str(path)], ["apply", str(path)]):
        result = run_process(consul_acl.http_addr, *command)  # no token: Consul would filter every list silently
        assert result.returncode == 4, result.stdout + result.stderr
        assert "key_prefix" in result.stderr and "to create" not in result.stdout and "no changes" not in result.stdout
    # a token that may read the keys, but not the owner's record
    rules = f'key_prefix "{owner}/" {{ policy = "read" }}'
    status, _, policy = call(consul_acl, "PUT", "/v1/acl/policy", json.dumps({"Name": f"p-{unique}", "Rules": rules}))
    assert status == 200, policy
    status, _, created = call(consul_acl, "PUT", "/v1/acl/token", json.dumps({"Policies": [{"ID": policy["ID"]}]}))
    assert status == 200
    result = run_process(consul_acl.http_addr, "plan", str(path), env={"CONSUL_HTTP_TOKEN": created["SecretID"]})
    assert result.returncode == 4 and record_key(owner) in result.stderr
    assert kv_value(consul_acl, f"{owner}/a") == b"1"  # destroy removed nothing it could not see


class NotConsul:
    """A web server that answers 404 to everything."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def _no(self) -> None:
                self.send_response(404)
                self.end_headers()

            def do_GET(self) -> None:
                self._no()

            def do_PUT(self) -> None:
                self._no()

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.address = f"127.0.0.1:{self.server.server_address[1]}"


@pytest.fixture
def not_consul() -> Iterator[NotConsul]:
    server = NotConsul()
    yield server
    server.server.shutdown()


def test_a_server_that_is_not_consul_is_exit_4(not_consul: NotConsul, tmp_path: Path, unique: str) -> None:
    path = write(tmp_path, "m.yaml", keyed(f"nc-{unique}", f"nc-{unique}"))
    for command in ("plan", "apply"):
        result = run_process(not_consul.address, command, str(path))
        assert result.returncode == 4, result.stdout + result.stderr
        assert "is this a Consul agent" in result.stderr and "to create" not in result.stdout


def test_a_datacenter_that_cannot_apply_is_refused(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    path = write(tmp_path, "m.yaml", keyed(f"dc-{unique}", f"dc-{unique}"))
    for command in ("plan", "apply", "destroy"):
        extra = ["--yes"] if command == "destroy" else []
        result = run_process(consul.http_addr, command, *extra, "--datacenter", "dc9", str(path))
        assert result.returncode == 3, result.stderr
        assert "dc9" in result.stderr and "dc1" in result.stderr
    assert run_process(consul.http_addr, "apply", "--datacenter", "dc1", str(path)).returncode == 0


def test_a_registration_answered_but_not_made_is_failed(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    owner = f"reg-{unique}"
    path = write(tmp_path, "m.yaml", f"version: 1\nowner: {owner}\nservices:\n  - {{name: {owner}, port: 80}}\n")
    with fault_proxy(consul.ports.http) as proxy:
        proxy.inject("empty200", method="PUT", path="/v1/agent/service/register")
        result = run_process(proxy.address, "apply", str(path))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "does not show the result" in result.stderr and ": created" not in result.stdout
    assert "1 failed" in result.stdout
    assert run_process(consul.http_addr, "apply", str(path)).returncode == 0


def test_checks_field_by_field_and_causes(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    owner = f"why-{unique}"

    def manifest(interval: str, ttl: str) -> str:
        return (
            f"version: 1\nowner: {owner}\nservices:\n  - name: {owner}\n    id: {owner}\n    port: 80\n    checks:\n"
            f"      - {{http: 'http://127.0.0.1:1/h', interval: {interval}}}\n      - {{ttl: {ttl}, name: beat}}\n"
        )

    path = write(tmp_path, "m.yaml", manifest("10s", "30s"))
    assert run_process(consul.http_addr, "apply", str(path)).returncode == 0
    # the manifest changes: the plan names each check's field, no hash
    write(tmp_path, "m.yaml", manifest("15s", "30s"))
    plan = run_process(consul.http_addr, "plan", str(path)).stdout
    assert f"~ service {owner}  (manifest changed)" in plan
    assert 'checks[http http://127.0.0.1:1/h].interval: "10s" -> "15s"' in plan
    write(tmp_path, "m.yaml", manifest("10s", "30s"))
    # Consul drifts: someone re-registers the service keeping its meta, with an HTTP check where the TTL was
    registered = services(consul)[owner]
    register(
        consul,
        {
            "ID": owner,
            "Name": owner,
            "Port": 80,
            "Meta": registered["Meta"],
            "Checks": [
                {"CheckID": f"service:{owner}:1", "HTTP": "http://127.0.0.1:1/h", "Interval": "10s"},
                {"CheckID": f"service:{owner}:beat", "HTTP": "http://127.0.0.1:1/other", "Interval": "10s"},
            ],
        },
    )
    plan = run_process(consul.http_addr, "plan", str(path)).stdout
    assert f"~ service {owner}  (drift)" in plan
    assert 'checks[ttl 30s].type: "http" -> "ttl"' in plan
    assert run_process(consul.http_addr, "apply", str(path)).returncode == 0
    assert run_process(consul.http_addr, "plan", "--detailed-exitcode", str(path)).returncode == 0
    # both at once
    kv_owner = f"kvwhy-{unique}"
    kv_path = write(tmp_path, "kv.yaml", keyed(kv_owner, kv_owner, "1"))
    assert run_process(consul.http_addr, "apply", str(kv_path)).returncode == 0
    kv_put(consul, f"{kv_owner}/a", b"edited", flags=0xC0DE0001)
    assert f'~ kv {kv_owner}/a: "edited" -> "1"  (drift)' in run_process(consul.http_addr, "plan", str(kv_path)).stdout
    write(tmp_path, "kv.yaml", keyed(kv_owner, kv_owner, "2"))
    both = run_process(consul.http_addr, "plan", str(kv_path)).stdout
    assert "(manifest changed, and drift)" in both


def test_another_writers_equal_bytes_are_not_drift(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    owner = f"other-{unique}"
    path = write(tmp_path, "m.yaml", f"version: 1\nowner: {owner}\nkv:\n  prefix: {owner}/\n  enforce: {{ttl: 3600}}\n")
    assert run_process(consul.http_addr, "apply", str(path)).returncode == 0
    subprocess.run(
        [consul.binary, "kv", "put", f"-http-addr={consul.http_addr}", f"{owner}/ttl", "3600"],
        check=True,
        capture_output=True,
    )
    result = run_process(consul.http_addr, "plan", "--detailed-exitcode", str(path))
    assert result.returncode == 0, result.stdout
    assert "type marker" in result.stdout


def test_an_apply_set_removes_the_owner_of_a_deleted_manifest(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    folder = tmp_path / "deploy"
    folder.mkdir()
    stay = write(folder, "stay.yaml", keyed(f"stay-{unique}", f"stay-{unique}"))
    gone = write(
        folder,
        "gone.yaml",
        keyed(f"gone-{unique}", f"gone-{unique}") + f"services:\n  - {{name: gone-{unique}, port: 1}}\n",
    )
    name = f"set-{unique}"
    assert run_process(consul.http_addr, "apply", "--set", name, str(folder)).returncode == 0
    assert json.loads(kv_value(consul, set_key(name)) or b"{}")["owners"] == sorted(
        [f"gone-{unique}", f"stay-{unique}"]
    )
    gone.unlink()
    plan = run_process(consul.http_addr, "plan", "--prune", "--set", name, str(folder))
    assert f"owner gone-{unique}: its manifest is gone from the apply set" in plan.stdout
    assert f"- kv gone-{unique}/a" in plan.stdout and f"- service gone-{unique}" in plan.stdout
    applied = run_process(consul.http_addr, "apply", "--prune", "--set", name, str(folder))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert kv_value(consul, f"gone-{unique}/a") is None and f"gone-{unique}" not in services(consul)
    assert kv_value(consul, f"stay-{unique}/a") == b"1"
    assert json.loads(kv_value(consul, set_key(name)) or b"{}")["owners"] == [f"stay-{unique}"]
    assert stay.exists()


def test_without_a_set_a_deleted_manifest_is_reported_orphaned(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    folder = repo(tmp_path / "infra", f"https://git.example.com/{unique}/infra.git") / "consul"
    folder.mkdir()
    write(folder, "stay.yaml", keyed(f"ostay-{unique}", f"ostay-{unique}"))
    gone = write(folder, "gone.yaml", keyed(f"ogone-{unique}", f"ogone-{unique}"))
    assert run_process(consul.http_addr, "apply", str(folder)).returncode == 0
    gone.unlink()
    plan = run_process(consul.http_addr, "plan", "--prune", str(folder))
    assert f"! owner ogone-{unique}: applied from consul, and its manifest is gone" in plan.stdout
    quiet = run_process(consul.http_addr, "plan", "--prune", "--output", "json", str(folder))
    assert json.loads(quiet.stdout)["orphaned"] == [{"owner": f"ogone-{unique}", "folder": "consul"}]


def test_destroy_leaves_no_record_lock_or_index(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    owner = f"clean-{unique}"
    folder = repo(tmp_path / "r", f"https://git.example.com/{unique}/r.git")
    path = write(folder, "m.yaml", keyed(owner, owner))
    assert run_process(consul.http_addr, "apply", str(path)).returncode == 0
    assert kv_value(consul, lock_key(owner)) is not None  # the lock key exists after a write
    assert run_process(consul.http_addr, "destroy", "--yes", str(path)).returncode == 0
    _, _, keys = call(consul, "GET", "/v1/kv/consul-manifest/?keys")
    assert not [k for k in keys or [] if k.endswith(f"/{owner}") or f"/{owner}." in k], keys


def test_a_saved_plan_applies_exactly_and_refuses_when_stale(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    owner = f"saved-{unique}"
    path = write(tmp_path, "m.yaml", keyed(owner, owner, "1"))
    saved = tmp_path / "plan.json"
    planned = run_process(consul.http_addr, "plan", "--out", str(saved), str(path))
    assert planned.returncode == 0 and json.loads(saved.read_text())["format_version"] == 1
    applied = run_process(consul.http_addr, "apply", "--plan", str(saved))
    assert applied.returncode == 0, applied.stderr
    assert kv_value(consul, f"{owner}/a") == b"1"
    # a hand edit in Consul after the plan was made
    write(tmp_path, "m.yaml", keyed(owner, owner, "2"))
    assert run_process(consul.http_addr, "plan", "--out", str(saved), str(path)).returncode == 0
    kv_put(consul, f"{owner}/a", b"by-hand", flags=0xC0DE0001)
    stale = run_process(consul.http_addr, "apply", "--plan", str(saved))
    assert stale.returncode == 1 and "Consul changed since the plan" in stale.stderr
    assert kv_value(consul, f"{owner}/a") == b"by-hand"  # nothing written
    # a manifest edit after the plan was made
    assert run_process(consul.http_addr, "plan", "--out", str(saved), str(path)).returncode == 0
    write(tmp_path, "m.yaml", keyed(owner, owner, "3"))
    stale = run_process(consul.http_addr, "apply", "--plan", str(saved))
    assert stale.returncode == 1 and "manifests changed" in stale.stderr
    assert kv_value(consul, f"{owner}/a") == b"by-hand"


def test_import_then_adopt_plans_no_change(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    prefix = f"legacy-{unique}"
    kv_put(consul, f"{prefix}/ttl", b"3600")
    kv_put(consul, f"{prefix}/db/url", b"postgres://x:5432/db")
    register(consul, {"ID": f"{prefix}-1", "Name": prefix, "Port": 9000, "Tags": ["v1"], "Meta": {"team": "t"}})
    target = tmp_path / "legacy.yaml"
    result = run_process(
        consul.http_addr,
        "import",
        "--owner",
        prefix,
        "--service",
        prefix,
        "--kv-prefix",
        f"{prefix}/",
        "-o",
        str(target),
    )
    assert result.returncode == 0, result.stderr
    adopted = run_process(consul.http_addr, "apply", "--adopt", str(target))
    assert adopted.returncode == 0, adopted.stdout + adopted.stderr
    assert "3 adopted" in adopted.stdout
    assert run_process(consul.http_addr, "plan", "--detailed-exitcode", str(target)).returncode == 0
    assert services(consul)[f"{prefix}-1"]["Meta"]["manifest-owner"] == prefix


def test_ten_owners_in_one_folder_apply_concurrently(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    folder = tmp_path / "ten"
    folder.mkdir()
    for i in range(10):
        body = "\n".join(f"    k{j}: {j}" for j in range(100))
        write(
            folder,
            f"o{i}.yaml",
            f"version: 1\nowner: ten-{unique}-{i}\nkv:\n  prefix: ten-{unique}-{i}/\n  enforce:\n{body}\n",
        )
    result = run_process(consul.http_addr, "apply", "--output", "json", str(folder))
    assert result.returncode == 0, result.stderr
    holds = sorted(
        (o["report"]["lock"]["acquired_at"], o["report"]["lock"]["released_at"])
        for o in json.loads(result.stdout)["owners"]
    )
    assert len(holds) == 10
    assert any(holds[i + 1][0] < holds[i][1] for i in range(9)), "the owners' locks were held one after another"
