"""render and exec against real agents: health, strategies, datacenter failover, and the fallback chain."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from manifest_runner.config import ConsulConfig
from manifest_runner.consul.client import ConsulClient
from manifest_runner.manifest.loader import load_manifests
from manifest_runner.resolve.cache import LastKnownGood
from manifest_runner.resolve.resolver import Resolver
from manifest_runner.testing.devagent import DevAgent, free_port
from tests.integration.helpers import call, kv_put, register, run_process, write

pytestmark = pytest.mark.consul


def client_for(agent: DevAgent) -> ConsulClient:
    return ConsulClient(ConsulConfig.from_sources({"http_addr": agent.http_addr}, {}))


def instances(agent: DevAgent, service: str, specs: list[tuple[str, int, str, dict[str, int] | None]]) -> None:
    """Register instances with a TTL check in the given initial status; weights optional."""
    for instance_id, port, status, weights in specs:
        payload = {
            "ID": instance_id,
            "Name": service,
            "Address": "127.0.0.1",
            "Port": port,
            "Check": {"CheckID": f"service:{instance_id}", "TTL": "10m", "Status": status},
        }
        if weights:
            payload["Weights"] = weights
        register(agent, payload)


def set_status(agent: DevAgent, instance_id: str, status: str) -> None:
    verb = {"passing": "pass", "warning": "warn", "critical": "fail"}[status]
    status_code, _, body = call(agent, "PUT", f"/v1/agent/check/{verb}/service:{instance_id}")
    assert status_code == 200, body


def render_json(agent_addr: str, path: Path, *extra: str, env: dict[str, str] | None = None) -> tuple[int, dict, str]:
    result = run_process(agent_addr, "render", "--output", "-", "--format", "json", *extra, str(path), env=env)
    document = json.loads(result.stdout) if result.stdout.strip() else {}
    return result.returncode, document, result.stderr


def test_only_healthy_instances_and_a_critical_one_disappears(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    service = f"api-{unique}"
    instances(
        consul,
        service,
        [
            (f"{service}-a", 9001, "passing", None),
            (f"{service}-b", 9002, "passing", None),
            (f"{service}-c", 9003, "critical", None),
        ],
    )
    path = write(
        tmp_path,
        "m.yaml",
        f"""
        version: 1
        dependencies:
          API: {{service: {service}, strategy: first, format: "http://{{address}}:{{port}}"}}
          API_WARN: {{service: {service}, include_warning: true, strategy: first}}
    """,
    )
    code, document, _ = render_json(consul.http_addr, path, "--no-cache")
    assert code == 0
    api = document["dependencies"]["API"]
    assert api["source"] == "consul"
    assert sorted(i["id"] for i in api["instances"]) == [f"{service}-a", f"{service}-b"]
    assert api["value"] in ("http://127.0.0.1:9001", "http://127.0.0.1:9002")

    set_status(consul, f"{service}-a", "critical")
    set_status(consul, f"{service}-b", "warning")
    code, document, _ = render_json(consul.http_addr, path, "--no-cache")
    assert code == 1  # API has no passing instance, no fallback
    code, document, stderr = render_json(consul.http_addr, path.parent / "m.yaml", "--no-cache")
    assert "API: no healthy instance of" in stderr

    path2 = write(
        tmp_path, "w.yaml", f"version: 1\ndependencies:\n  W: {{service: {service}, include_warning: true}}\n"
    )
    code, document, _ = render_json(consul.http_addr, path2, "--no-cache")
    assert code == 0
    warned = document["dependencies"]["W"]
    assert [i["id"] for i in warned["instances"]] == [f"{service}-b"]  # warning yes, critical never
    assert warned["instances"][0]["status"] == "warning"


def test_health_weighted_follows_the_weights(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    service = f"w-{unique}"
    weights = {"a": 1, "b": 3, "c": 6}
    instances(
        consul,
        service,
        [
            (f"{service}-{k}", 9100 + i, "passing", {"Passing": w, "Warning": 1})
            for i, (k, w) in enumerate(weights.items())
        ],
    )
    path = write(tmp_path, "m.yaml", f"version: 1\ndependencies:\n  X: {{service: {service}, format: '{{id}}'}}\n")
    dependencies = load_manifests([path], {}).manifests[0].manifest.dependencies
    import random

    resolver = Resolver(client_for(consul), LastKnownGood(None, "w"), uniform=random.Random(7).random, sticky=False)
    picks = Counter(resolver.resolve(dependencies)[0].value for _ in range(3000))
    for key, weight in weights.items():
        share = picks[f"{service}-{key}"] / 3000
        assert abs(share - weight / 10) < 0.03, (key, share, picks)


def test_weights_for_warning_instances(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    service = f"ww-{unique}"
    instances(
        consul,
        service,
        [
            (f"{service}-a", 9201, "passing", {"Passing": 1, "Warning": 1}),
            (f"{service}-b", 9202, "warning", {"Passing": 10, "Warning": 0}),
        ],
    )
    path = write(
        tmp_path,
        "m.yaml",
        f"""
        version: 1
        dependencies:
          X: {{service: {service}, format: '{{id}}', include_warning: true}}
    """,
    )
    dependencies = load_manifests([path], {}).manifests[0].manifest.dependencies
    import random

    resolver = Resolver(client_for(consul), LastKnownGood(None, "w"), uniform=random.Random(3).random, sticky=False)
    picks = Counter(resolver.resolve(dependencies)[0].value for _ in range(300))
    assert picks == {f"{service}-a": 300}  # warning weight 0: no traffic while it warns


def test_round_robin_cycles_and_survives_a_shrinking_list(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    service = f"rr-{unique}"
    ids = [f"{service}-{k}" for k in "abc"]
    instances(consul, service, [(i, 9300 + n, "passing", None) for n, i in enumerate(ids)])
    path = write(
        tmp_path,
        "m.yaml",
        f"version: 1\ndependencies:\n  X: {{service: {service}, strategy: round_robin, format: '{{id}}'}}\n",
    )
    dependencies = load_manifests([path], {}).manifests[0].manifest.dependencies
    resolver = Resolver(client_for(consul), LastKnownGood(None, "rr"))
    seen = [resolver.resolve(dependencies)[0].value for _ in range(6)]
    assert seen == ids + ids
    set_status(consul, ids[1], "critical")
    seen = [resolver.resolve(dependencies)[0].value for _ in range(4)]
    assert set(seen) == {ids[0], ids[2]}


def test_an_empty_service_address_is_the_nodes(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    service = f"na-{unique}"
    register(consul, {"ID": service, "Name": service, "Port": 7000})
    path = write(tmp_path, "m.yaml", f"version: 1\ndependencies:\n  X: {{service: {service}}}\n")
    code, document, _ = render_json(consul.http_addr, path, "--no-cache")
    assert code == 0
    assert document["dependencies"]["X"]["value"] == "127.0.0.1:7000"


def test_format_fields(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    service = f"fmt-{unique}"
    register(
        consul,
        {
            "ID": f"{service}-1",
            "Name": service,
            "Address": "::1",
            "Port": 7001,
            "Tags": ["a", "b"],
            "Meta": {"path": "v2"},
        },
    )
    path = write(
        tmp_path,
        "m.yaml",
        f"""
        version: 1
        dependencies:
          X: {{service: {service}, format: "http://{{host}}:{{port}}/{{meta[path]}}?i={{id}}&t={{tags}}&dc={{datacenter}}"}}
    """,
    )
    code, document, _ = render_json(consul.http_addr, path, "--no-cache")
    assert code == 0
    assert document["dependencies"]["X"]["value"] == f"http://[::1]:7001/v2?i={service}-1&t=a,b&dc=dc1"


def test_kv_dependencies_keep_their_type(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    kv_put(consul, f"{unique}/flags/a", "true", flags=0xC0DE0002)
    kv_put(consul, f"{unique}/flags/b", "on")
    kv_put(consul, f"{unique}/port", "5432")
    path = write(
        tmp_path,
        "m.yaml",
        f"""
        version: 1
        dependencies:
          FLAGS: {{kv: {unique}/flags/}}
          PORT: {{kv: {unique}/port}}
          MISSING: {{kv: {unique}/nope, optional: true}}
    """,
    )
    code, document, stderr = render_json(consul.http_addr, path, "--no-cache")
    assert code == 0, stderr
    deps = document["dependencies"]
    assert deps["FLAGS"]["value"] == '{"a":true,"b":"on"}'
    assert deps["FLAGS"]["data"] == {"a": True, "b": "on"}
    assert deps["PORT"]["value"] == "5432"
    assert deps["MISSING"]["source"] == "none"
    assert "MISSING: optional, left out" in stderr


def test_datacenter_failover(consul_wan: tuple[DevAgent, DevAgent], tmp_path: Path, unique: str) -> None:
    dc1, dc2 = consul_wan
    service = f"db-{unique}"
    instances(dc1, service, [(f"{service}-dc1", 5432, "critical", None)])
    instances(dc2, service, [(f"{service}-dc2", 5433, "passing", None)])
    path = write(
        tmp_path,
        "m.yaml",
        f"""
        version: 1
        dependencies:
          DB: {{service: {service}, datacenters: [dc1, dc2], format: "{{address}}:{{port}}@{{datacenter}}"}}
    """,
    )
    code, document, stderr = render_json(dc1.http_addr, path, "--no-cache")
    assert code == 0, stderr
    assert document["dependencies"]["DB"]["value"] == "127.0.0.1:5433@dc2"
    set_status(dc1, f"{service}-dc1", "passing")
    code, document, _ = render_json(dc1.http_addr, path, "--no-cache")
    assert document["dependencies"]["DB"]["value"] == "127.0.0.1:5432@dc1"


def test_the_fallback_chain_when_consul_is_down(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    service = f"fb-{unique}"
    instances(consul, service, [(f"{service}-1", 6000, "passing", None)])
    path = write(
        tmp_path,
        "m.yaml",
        f"""
        version: 1
        owner: fb-{unique}
        dependencies:
          WARM: {{service: {service}, fallback: "static:1"}}
          COLD: {{service: nothing-{unique}, fallback: "static:2"}}
    """,
    )
    cache = tmp_path / "cache"
    code, document, _ = render_json(consul.http_addr, path, "--cache-dir", str(cache))
    assert code == 0
    assert document["dependencies"]["WARM"]["source"] == "consul"

    with socket.socket() as silent:  # Consul "down" as the worst kind: it accepts and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        code, document, stderr = render_json(address, path, "--cache-dir", str(cache), "--timeout", "1")
    assert code == 0, stderr
    warm, cold = document["dependencies"]["WARM"], document["dependencies"]["COLD"]
    assert (warm["source"], warm["value"]) == ("cache", "127.0.0.1:6000")
    assert warm["age_seconds"] >= 0
    assert (cold["source"], cold["value"]) == ("fallback", "static:2")
    assert "Consul unreachable" in warm["reason"]

    no_fallback = write(tmp_path, "n.yaml", f"version: 1\ndependencies:\n  NEEDED: {{service: {service}}}\n")
    result = run_process(
        f"127.0.0.1:{free_port()}", "render", "--no-cache", "-o", str(tmp_path / "out.env"), str(no_fallback)
    )
    assert result.returncode == 1
    assert "NEEDED: Consul unreachable" in result.stderr
    assert not (tmp_path / "out.env").exists()  # nothing is written when a required dependency has no value


def test_max_age_refuses_an_old_cached_value(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    service = f"age-{unique}"
    instances(consul, service, [(f"{service}-1", 6100, "passing", None)])
    path = write(
        tmp_path,
        "m.yaml",
        f"""
        version: 1
        owner: age-{unique}
        dependencies:
          X: {{service: {service}, max_age: 1h, fallback: "static"}}
    """,
    )
    cache = tmp_path / "cache"
    assert render_json(consul.http_addr, path, "--cache-dir", str(cache))[0] == 0
    cache_file = cache / f"age-{unique}.json"
    content = json.loads(cache_file.read_text())
    content["entries"]["X"]["resolved_at"] -= 7200  # the value was last confirmed two hours ago
    cache_file.write_text(json.dumps(content))
    code, document, _ = render_json(f"127.0.0.1:{free_port()}", path, "--cache-dir", str(cache))
    assert code == 0
    assert document["dependencies"]["X"]["source"] == "fallback"
    assert "over max_age 1h" in document["dependencies"]["X"]["reason"]


def test_render_writes_each_manifests_outputs_only_when_they_change(
    consul: DevAgent, tmp_path: Path, unique: str
) -> None:
    kv_put(consul, f"{unique}/url", "postgresql://db:5432/x")
    path = write(
        tmp_path,
        "m.yaml",
        f"""
        version: 1
        dependencies:
          DATABASE_URL: {{kv: {unique}/url}}
          NOTE: {{kv: {unique}/note, fallback: "it's a \\"quoted\\" $value"}}
        outputs:
          env_file: out/.env
          json_file: out/endpoints.json
          mode: "0640"
    """,
    )
    (tmp_path / "out").mkdir()
    first = run_process(consul.http_addr, "render", "--no-cache", str(path))
    assert first.returncode == 0, first.stderr
    env_file = tmp_path / "out" / ".env"
    assert "wrote" in first.stderr
    assert oct(env_file.stat().st_mode & 0o777) == "0o640"
    text = env_file.read_text()
    assert "DATABASE_URL=postgresql://db:5432/x\n" in text
    assert "NOTE='it'\\''s a \"quoted\" $value'\n" in text
    sourced = subprocess.run(
        ["sh", "-c", f'. {env_file} && printf %s "$NOTE"'], capture_output=True, text=True, check=True
    )
    assert sourced.stdout == 'it\'s a "quoted" $value'
    inode = env_file.stat().st_ino
    second = run_process(consul.http_addr, "render", "--no-cache", str(path))
    assert second.returncode == 0
    assert f"unchanged {env_file}" in second.stderr
    assert env_file.stat().st_ino == inode
    assert (
        json.loads((tmp_path / "out" / "endpoints.json").read_text())["dependencies"]["DATABASE_URL"]["source"]
        == "consul"
    )


def test_exec_passes_values_and_the_exit_code(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    kv_put(consul, f"{unique}/greeting", "hello world")
    path = write(tmp_path, "m.yaml", f"version: 1\ndependencies:\n  GREETING: {{kv: {unique}/greeting}}\n")
    result = run_process(
        consul.http_addr, "exec", "--no-cache", str(path), "--", "sh", "-c", 'printf %s "$GREETING"; exit 42'
    )
    assert result.returncode == 42
    assert result.stdout == "hello world"


def test_exec_forwards_sigterm(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    path = write(tmp_path, "m.yaml", "version: 1\ndependencies:\n  X: {kv: nope, fallback: x}\n")
    ready = tmp_path / "ready"
    script = f"trap 'echo got-term; exit 3' TERM; touch {ready}; while true; do sleep 0.05; done"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_HTTP")}
    process = subprocess.Popen(
        [sys.executable, "-m", "manifest_runner", "exec", "--no-cache", str(path), "--", "sh", "-c", script],
        env={**env, "CONSUL_HTTP_ADDR": consul.http_addr},
        stdout=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert ready.exists()
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 3
    assert "got-term" in out


def test_exec_watch_restarts_the_child_on_a_change(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    from tests.integration.runproc import wait_for

    kv_put(consul, f"{unique}/v", "one")
    path = write(tmp_path, "m.yaml", f"version: 1\ndependencies:\n  V: {{kv: {unique}/v}}\n")
    log = tmp_path / "log"
    script = f'echo "start $V" >> {log}; trap "echo stop >> {log}; exit 0" TERM; while true; do sleep 0.05; done'
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_HTTP")}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "manifest_runner",
            "exec",
            "--watch",
            "--wait",
            "100ms",
            "--no-cache",
            str(path),
            "--",
            "sh",
            "-c",
            script,
        ],
        env={**env, "CONSUL_HTTP_ADDR": consul.http_addr},
    )
    try:
        wait_for(lambda: log.exists() and "start one" in log.read_text(), what="the child started")
        kv_put(consul, f"{unique}/v", "two")
        wait_for(lambda: "start two" in log.read_text(), what="the child restarted with the new value")
        assert log.read_text().splitlines()[:3] == ["start one", "stop", "start two"]
        process.send_signal(signal.SIGTERM)  # forwarded: the child exits 0, and so does exec
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
