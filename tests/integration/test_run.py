"""`consul-manifest run` against real agents: it converges edits, repairs drift, survives a restarted agent, keeps
TTL checks alive from probes, ignores invalid edits, and stops as declared."""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from manifest_runner.testing.devagent import DevAgent, free_port
from tests.integration.helpers import checks, deregister, kv_put, kv_value, services, write
from tests.integration.runproc import RunProcess, wait_for

pytestmark = pytest.mark.consul


def manifest(
    owner: str,
    *,
    tags: str = "[api]",
    extra_key: str = "",
    second: bool = True,
    ready_url: str | None = None,
    keep_worker: bool = False,
) -> str:
    heartbeat = f"\n        heartbeat: {{http: '{ready_url}', every: 200ms, timeout: 1s}}" if ready_url else ""
    worker = (
        f"""
  - name: {owner}-worker
    id: {owner}-worker
    on_exit: {"keep" if keep_worker else "deregister"}
"""
        if second
        else ""
    )
    return f"""
version: 1
owner: {owner}
services:
  - name: {owner}-api
    id: {owner}-api
    port: 8080
    tags: {tags}
    checks:
      - ttl: 5s{heartbeat}
{worker}
kv:
  prefix: {owner}/
  seed:
    pool: 20
  enforce:
    mode: fast
{extra_key}
"""


def test_edits_converge_without_a_restart(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    owner = f"edit-{unique}"
    path = write(tmp_path, "m.yaml", manifest(owner))
    with RunProcess(consul.http_addr, ["--no-cache", str(path)], tmp_path) as run:
        wait_for(lambda: f"{owner}-worker" in services(consul), what="first apply")
        write(tmp_path, "m.yaml", manifest(owner, tags="[api, v2]", extra_key="    added: yes", second=False))
        wait_for(lambda: services(consul).get(f"{owner}-api", {}).get("Tags") == ["api", "v2"], what="new tag")
        wait_for(lambda: kv_value(consul, f"{owner}/added") == b"yes", what="new key")
        wait_for(lambda: f"{owner}-worker" not in services(consul), what="removed service")
        assert run.stop() == 0, run.output()


def test_drift_is_repaired_and_seed_edits_are_kept(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    owner = f"drift-{unique}"
    path = write(tmp_path, "m.yaml", manifest(owner))
    with RunProcess(consul.http_addr, ["--no-cache", str(path)], tmp_path) as run:
        wait_for(lambda: f"{owner}-api" in services(consul), what="first apply")
        deregister(consul, f"{owner}-api")
        kv_put(consul, f"{owner}/mode", "slow")
        kv_put(consul, f"{owner}/pool", "99")
        wait_for(lambda: f"{owner}-api" in services(consul), what="service re-registered")
        wait_for(lambda: kv_value(consul, f"{owner}/mode") == b"fast", what="enforce key reverted")
        assert kv_value(consul, f"{owner}/pool") == b"99"
        assert run.stop() == 0, run.output()


def test_a_restarted_empty_agent_gets_everything_back(fresh_consul: DevAgent, tmp_path: Path, unique: str) -> None:
    owner = f"restart-{unique}"
    path = write(tmp_path, "m.yaml", manifest(owner))
    with RunProcess(fresh_consul.http_addr, ["--no-cache", str(path)], tmp_path) as run:
        wait_for(lambda: f"{owner}-worker" in services(fresh_consul), what="first apply")
        fresh_consul.restart()  # empty (test_agent_fixtures shows a restarted dev agent forgets everything); run may
        # already be re-registering by now, so the empty state is not asserted here: it would be a race
        wait_for(lambda: {f"{owner}-api", f"{owner}-worker"} <= set(services(fresh_consul)), what="re-registered")
        wait_for(lambda: kv_value(fresh_consul, f"{owner}/pool") == b"20", what="keys back")
        assert kv_value(fresh_consul, f"{owner}/mode") == b"fast"
        assert run.alive()
        assert run.stop() == 0, run.output()


class Ready:
    """A local HTTP endpoint whose status the test sets."""

    def __init__(self) -> None:
        self.status = 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(outer.status)
                self.end_headers()
                self.wfile.write(b"ok" if outer.status < 300 else b"not ready")

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/ready"


@pytest.fixture
def ready() -> Iterator[Ready]:
    endpoint = Ready()
    yield endpoint
    endpoint.server.shutdown()


def test_heartbeats_follow_the_probe(consul: DevAgent, tmp_path: Path, unique: str, ready: Ready) -> None:
    owner = f"beat-{unique}"
    path = write(tmp_path, "m.yaml", manifest(owner, second=False, ready_url=ready.url))
    check_id = f"service:{owner}-api"

    def status() -> str:
        return str(checks(consul).get(check_id, {}).get("Status"))

    with RunProcess(consul.http_addr, ["--no-cache", str(path)], tmp_path) as run:
        wait_for(lambda: status() == "passing", what="passing")
        ready.status = 500
        wait_for(lambda: status() == "critical", what="critical after 500")
        assert "HTTP 500" in checks(consul)[check_id]["Output"]
        ready.status = 429
        wait_for(lambda: status() == "warning", what="warning after 429")
        ready.status = 200
        wait_for(lambda: status() == "passing", what="passing again")
        assert run.stop() == 0, run.output()


def test_an_invalid_edit_changes_nothing_and_a_fix_converges(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    owner = f"bad-{unique}"
    path = write(tmp_path, "m.yaml", manifest(owner))
    with RunProcess(consul.http_addr, ["--no-cache", str(path)], tmp_path) as run:
        wait_for(lambda: f"{owner}-worker" in services(consul), what="first apply")
        before = (services(consul)[f"{owner}-api"], kv_value(consul, f"{owner}/mode"))
        path.write_text(manifest(owner, second=False).replace("port: 8080", "port: 99999"))
        wait_for(lambda: "the last good one stays in force" in run.output(), what="the error reported")
        assert run.alive()
        assert f"{owner}-worker" in services(consul)  # nothing was pruned because of a typo
        assert (services(consul)[f"{owner}-api"], kv_value(consul, f"{owner}/mode")) == before
        path.unlink()
        wait_for(lambda: "disappeared" in run.output() or "no such file" in run.output(), what="deletion reported")
        assert f"{owner}-worker" in services(consul)
        write(tmp_path, "m.yaml", manifest(owner, tags="[fixed]"))
        wait_for(lambda: services(consul).get(f"{owner}-api", {}).get("Tags") == ["fixed"], what="fix applied")
        assert run.stop() == 0, run.output()


def test_sigterm_honours_on_exit(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    owner = f"exit-{unique}"
    path = write(tmp_path, "m.yaml", manifest(owner, keep_worker=True))
    with RunProcess(consul.http_addr, ["--no-cache", str(path)], tmp_path) as run:
        wait_for(lambda: {f"{owner}-api", f"{owner}-worker"} <= set(services(consul)), what="first apply")
        assert run.stop(signal.SIGTERM) == 0, run.output()
    remaining = set(services(consul))
    assert f"{owner}-api" not in remaining  # on_exit: deregister (the default)
    assert f"{owner}-worker" in remaining  # on_exit: keep
    assert kv_value(consul, f"{owner}/mode") == b"fast"  # KV is configuration: it stays
    deregister(consul, f"{owner}-worker")


def test_sigint_stops_cleanly_too(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    owner = f"int-{unique}"
    path = write(tmp_path, "m.yaml", manifest(owner, second=False))
    with RunProcess(consul.http_addr, ["--no-cache", str(path)], tmp_path) as run:
        wait_for(lambda: f"{owner}-api" in services(consul), what="first apply")
        assert run.stop(signal.SIGINT) == 0
    assert f"{owner}-api" not in services(consul)


def test_health_and_metrics_endpoint(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    owner = f"obs-{unique}"
    path = write(tmp_path, "m.yaml", manifest(owner, second=False))
    port = free_port()
    with RunProcess(
        consul.http_addr, ["--no-cache", "--listen", f"127.0.0.1:{port}", "--log-format", "json", str(path)], tmp_path
    ) as run:
        health = wait_for(
            lambda: json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz").read()), what="healthz"
        )
        assert health["converged"] is True
        assert health["owners"] == [owner]
        deregister(consul, f"{owner}-api")
        wait_for(lambda: f"{owner}-api" in services(consul), what="repair")

        def repaired() -> str | None:
            # the repair shows in Consul just before apply has confirmed it and counted it
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
            drift = [line for line in text.splitlines() if line.startswith("consul_manifest_drift_repaired_total ")]
            return text if drift and float(drift[0].split()[1]) >= 1 else None

        metrics = wait_for(repaired, what="the repair counted")
        assert "consul_manifest_converged 1" in metrics
        assert 'consul_manifest_actions_total{op="create"}' in metrics
        assert run.stop() == 0
        lines = [json.loads(line) for line in run.output().splitlines() if line.startswith("{")]
        assert any(line["level"] == "info" and "created" in line["message"] for line in lines)


def test_outputs_follow_dependencies(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    path = write(
        tmp_path,
        "m.yaml",
        f"""
        version: 1
        owner: deps-{unique}
        dependencies:
          URL: {{kv: {unique}/url, fallback: none}}
        outputs:
          env_file: out.env
    """,
    )
    with RunProcess(consul.http_addr, ["--no-cache", str(path)], tmp_path) as run:
        env_file = tmp_path / "out.env"
        wait_for(lambda: "URL=none" in env_file.read_text(), what="fallback rendered")
        kv_put(consul, f"{unique}/url", "http://a:1")
        wait_for(lambda: "URL=http://a:1" in env_file.read_text(), what="new value rendered")
        kv_put(consul, f"{unique}/url", "http://b:2")
        wait_for(lambda: "URL=http://b:2" in env_file.read_text(), what="changed value rendered")
        assert run.stop() == 0


def test_run_supervises_a_command(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    kv_put(consul, f"{unique}/v", "one")
    path = write(tmp_path, "m.yaml", f"version: 1\nowner: sup-{unique}\ndependencies:\n  V: {{kv: {unique}/v}}\n")
    log = tmp_path / "child.log"
    script = f'echo "start $V" >> {log}; trap "exit 0" TERM; while true; do sleep 0.05; done'
    with RunProcess(
        consul.http_addr, ["--no-cache", "--wait", "100ms", str(path), "--", "sh", "-c", script], tmp_path
    ) as run:
        wait_for(lambda: log.exists() and "start one" in log.read_text(), what="the command started")
        kv_put(consul, f"{unique}/v", "two")
        wait_for(lambda: "start two" in log.read_text(), what="the command restarted with the new value")
        assert run.stop() == 0, run.output()


def test_metrics_parse_as_prometheus_exposition(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    owner = f"prom-{unique}"
    path = write(
        tmp_path,
        "m.yaml",
        manifest(owner, second=False) + f"dependencies:\n  DB: {{service: nothing-{unique}, fallback: 'x:1'}}\n",
    )
    port = free_port()
    with RunProcess(consul.http_addr, ["--no-cache", "--listen", f"127.0.0.1:{port}", str(path)], tmp_path) as run:

        def scraped() -> dict[str, list[tuple[dict[str, str], float]]] | None:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
            families: dict[str, list[tuple[dict[str, str], float]]] = {}
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    families.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
            synced = families.get("consul_manifest_last_sync_timestamp_seconds", [({}, 0.0)])[0][1]
            return families if synced > 0 and "consul_manifest_dependency_source" in families else None

        families = wait_for(scraped, what="metrics after the first sync")
        synced = families["consul_manifest_last_sync_timestamp_seconds"][0][1]
        assert abs(synced - time.time()) < 60  # full precision: 1.79605e+09 would be off by thousands of seconds
        sources = {labels["source"]: value for labels, value in families["consul_manifest_dependency_source"]}
        assert sources == {"consul": 0.0, "cache": 0.0, "fallback": 1.0, "none": 0.0}
        assert families["consul_manifest_dependency_errors_total"][0][1] >= 1
        assert families["consul_manifest_dependency_last_change_timestamp_seconds"][0][0]["dependency"] == "DB"
        assert "consul_manifest_syncs_total" in families and "consul_manifest_watch_wakeups_total" in families
        assert run.stop() == 0
