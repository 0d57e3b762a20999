"""Dependencies at scale against real agents: exact watches (the changes the old aggregate watch missed), no wake-up
for unwatched services, the fallback chain's meaning (an authoritative "no healthy instance" is not served from the
cache), datacenter failover with a stopped datacenter, and the library under load and outage: hundreds of watches
on a bounded pool, the circuit breaker behind a hanging proxy, least_connections over tied instances, and the
heartbeat re-registering after an agent restart."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from manifest_runner import ConsulRegistry
from manifest_runner.config import ConsulConfig
from manifest_runner.consul.base import LEADER
from manifest_runner.consul.client import ConsulClient
from manifest_runner.consul.watchpool import WatchPool
from manifest_runner.manifest.model import ServiceDependency
from manifest_runner.run.dependencies import DependencyWatch
from manifest_runner.testing.devagent import DevAgent
from tests.faults.proxy import fault_proxy
from tests.integration.helpers import deregister, register, services, write
from tests.integration.runproc import RunProcess, established_connections, wait_for
from tests.integration.test_render import instances, render_json, set_status

pytestmark = pytest.mark.consul


def env_values(path: Path) -> dict[str, str]:
    if not path.exists():
        return {}
    values = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value.strip("'\"")
    return values


def pg(agent: DevAgent, instance_id: str, port: int, tags: list[str], *, check: bool = True) -> None:
    payload: dict[str, Any] = {"ID": instance_id, "Name": "pg", "Address": "127.0.0.1", "Port": port, "Tags": tags}
    if check:
        payload["Check"] = {"CheckID": f"service:{instance_id}", "TTL": "10m", "Status": "passing"}
    register(agent, payload)


def test_the_changes_the_aggregate_watch_missed_reach_the_output(
    fresh_consul: DevAgent, tmp_path: Path, unique: str
) -> None:
    """More than 8 dependency services (the old aggregate mode), a dependency resync of an hour: a tag moved between
    instances, an instance re-registered on another port with the same id, and a new instance without checks are
    each in the output without any resync."""
    agent = fresh_consul
    pg(agent, "pg-1", 5001, ["primary"])
    pg(agent, "pg-2", 5002, ["replica"])
    others = "\n".join(f"  S{i}: {{service: other{i}-{unique}, fallback: 'none:{i}'}}" for i in range(10))
    path = write(
        tmp_path,
        "m.yaml",
        f"""
version: 1
owner: deps-{unique}
dependencies:
  DB: {{service: pg, tag: primary, strategy: first}}
  FRESH: {{service: fresh-{unique}, fallback: "absent"}}
{others}
outputs:
  env_file: out.env
""",
    )
    out = tmp_path / "out.env"
    with RunProcess(agent.http_addr, ["--no-cache", "--dependency-resync", "3600", str(path)], tmp_path) as run:
        wait_for(lambda: env_values(out).get("DB") == "127.0.0.1:5001", what="the first render", timeout=30)

        pg(agent, "pg-1", 5001, ["replica"])  # the primary tag moves from pg-1 to pg-2
        pg(agent, "pg-2", 5002, ["primary"])
        wait_for(lambda: env_values(out).get("DB") == "127.0.0.1:5002", what="the tag move")

        pg(agent, "pg-2", 6002, ["primary"])  # the same id, another port
        wait_for(lambda: env_values(out).get("DB") == "127.0.0.1:6002", what="the port change")

        register(agent, {"ID": f"fresh-{unique}-1", "Name": f"fresh-{unique}", "Address": "10.1.1.1", "Port": 7})
        wait_for(lambda: env_values(out).get("FRESH") == "10.1.1.1:7", what="a new instance without checks")
        assert run.stop() == 0


def test_a_change_to_an_unwatched_service_wakes_nothing(consul: DevAgent, unique: str) -> None:
    """Consul moves an existing service's health index only for that service: unrelated changes cost a runner
    nothing. (A service that does not exist yet is indexed with the whole catalog: its watch wakes on any
    registration, re-resolves, finds the same nothing and writes nothing.)"""
    for i in range(12):
        register(consul, {"ID": f"w{i}-{unique}-0", "Name": f"w{i}-{unique}", "Port": 100 + i})
    client = ConsulClient(ConsulConfig.from_sources({"http_addr": consul.http_addr}, {}))
    pool = WatchPool(client, connections=4)
    woken: list[set[str]] = []
    dependencies = {f"D{i}": (ServiceDependency(service=f"w{i}-{unique}"), LEADER) for i in range(12)}
    watch = DependencyWatch(pool, dependencies, woken.append).start()
    try:
        assert watch.wait_ready(10)
        for i in range(20):  # changes nobody watches
            register(consul, {"ID": f"noise-{unique}-{i}", "Name": f"noise-{unique}", "Port": 1000 + i})
        register(consul, {"ID": f"w3-{unique}-1", "Name": f"w3-{unique}", "Port": 3})  # then one that is watched
        wait_for(lambda: woken, what="the watched change")
        assert woken == [{"D3"}]
        assert pool.connections_held <= 4
    finally:
        watch.stop()
        pool.stop()


def test_an_authoritative_no_healthy_instance_uses_the_fallback_not_the_cache(
    consul: DevAgent, tmp_path: Path, unique: str
) -> None:
    service = f"dying-{unique}"
    instances(consul, service, [(f"{service}-1", 6000, "passing", None)])
    path = write(
        tmp_path, "m.yaml", f"version: 1\ndependencies:\n  API: {{service: {service}, fallback: 'static:1'}}\n"
    )
    cache = tmp_path / "cache"
    code, document, _ = render_json(consul.http_addr, path, "--cache-dir", str(cache))
    assert (code, document["dependencies"]["API"]["source"]) == (0, "consul")
    set_status(consul, f"{service}-1", "critical")  # Consul is up and says: nothing healthy
    code, document, stderr = render_json(consul.http_addr, path, "--cache-dir", str(cache))
    api = document["dependencies"]["API"]
    assert (code, api["source"], api["value"]) == (0, "fallback", "static:1"), stderr
    assert "no healthy instance" in api["reason"]


def test_a_stopped_datacenter_fails_over_to_the_next(consul_binary: str, tmp_path: Path, unique: str) -> None:
    with DevAgent(consul_binary, datacenter="dc1") as dc1, DevAgent(consul_binary, datacenter="dc2") as dc2:
        dc1.join_wan(dc2)
        service = f"geo-{unique}"
        instances(dc1, service, [(f"{service}-dc1", 7001, "passing", None)])
        instances(dc2, service, [(f"{service}-dc2", 7002, "passing", None)])
        path = write(
            tmp_path,
            "m.yaml",
            f"""
version: 1
dependencies:
  API: {{service: {service}, datacenters: [dc2, dc1], fallback: "static:1"}}
""",
        )
        code, document, _ = render_json(dc1.http_addr, path, "--no-cache")
        assert (code, document["dependencies"]["API"]["value"]) == (0, "127.0.0.1:7002")
        registry = ConsulRegistry(f"geo-client-{unique}", 1, consul_host="127.0.0.1", consul_port=dc1.ports.http)
        assert registry.get_service_endpoint(service, datacenters=["dc2", "dc1"]) == "127.0.0.1:7002"

        dc2.stop()
        code, document, stderr = render_json(dc1.http_addr, path, "--no-cache", "--timeout", "20")
        api = document["dependencies"]["API"]
        assert (code, api["source"], api["value"], api["datacenter"]) == (0, "consul", "127.0.0.1:7001", "dc1"), stderr
        assert "dc2" in api["reason"]
        assert "Consul unreachable" not in stderr
        assert (
            registry.get_service_endpoint(service, datacenters=["dc2", "dc1"], fallback_url="f:1") == "127.0.0.1:7001"
        )
        assert not registry.circuit.is_open  # dc2's failure is not the agent's
        registry.close()


def test_hundreds_of_watches_share_a_bounded_pool_and_lookups_still_answer(consul: DevAgent, unique: str) -> None:
    instances(consul, f"looked-{unique}", [(f"looked-{unique}-1", 8000, "passing", None)])
    registry = ConsulRegistry(f"many-{unique}", 1, consul_host="127.0.0.1", consul_port=consul.ports.http)
    first: set[str] = set()
    lock = threading.Lock()

    def seen(name: str) -> Any:
        def callback(_instances: list[dict[str, Any]]) -> None:
            with lock:
                first.add(name)

        return callback

    try:
        for i in range(300):
            registry.watch_service(f"watched-{unique}-{i}", seen(f"watched-{unique}-{i}"))
        wait_for(lambda: len(first) == 300, what="every watch's first callback", timeout=60)
        for _ in range(20):
            assert registry.get_service_endpoint(f"looked-{unique}") == "127.0.0.1:8000"
        held = registry.discovery.pool().connections_held
        assert held <= 48
        import os

        assert established_connections(os.getpid(), consul.ports.http) <= held + 8
        instances(consul, f"watched-{unique}-299", [(f"watched-{unique}-299-1", 9000, "passing", None)])
        changed = threading.Event()
        registry.watch_service(f"watched-{unique}-299", lambda found: changed.set() if found else None)
        assert changed.wait(30)
    finally:
        registry.close()


def test_the_circuit_breaker_stops_asking_a_hung_consul(consul: DevAgent, unique: str) -> None:
    with fault_proxy(consul.ports.http) as proxy:
        settings = ConsulConfig.from_sources({"http_addr": proxy.address, "timeout": 0.5}, {})
        registry = ConsulRegistry(f"hung-{unique}", 1, settings=settings)
        proxy.inject("blackhole", path="/v1/health/service/")
        assert registry.get_service_endpoint("db", fallback_url="f:1") == "f:1"  # waits out the timeout once
        asked = len(proxy.requests)
        for _ in range(50):
            assert registry.get_service_endpoint("db", fallback_url="f:1") == "f:1"
            assert registry.get_service_address("db", fallback_url="f:2") == "f:2"
        assert len([r for r in proxy.requests[asked:] if r[1].startswith("/v1/health/")]) == 0
        assert registry.circuit.is_open
        proxy.clear()  # Consul is back: the next call (answered by the fallback at once) starts a background probe

        def closed() -> bool:
            registry.get_service_endpoint("db", fallback_url="f:1")
            return not registry.circuit.is_open

        wait_for(closed, what="the probe closing the circuit", timeout=10)
        instances(consul, f"db-{unique}", [(f"db-{unique}-1", 5432, "passing", None)])
        assert registry.get_service_endpoint(f"db-{unique}") == "127.0.0.1:5432"
        registry.client.close()


def test_least_connections_spreads_over_tied_instances(consul: DevAgent, unique: str) -> None:
    service = f"tied-{unique}"
    instances(consul, service, [(f"{service}-{i}", 9100 + i, "passing", None) for i in range(3)])
    registry = ConsulRegistry(f"lc-{unique}", 1, consul_host="127.0.0.1", consul_port=consul.ports.http)
    picks = Counter(registry.get_service_endpoint(service, strategy="least_connections") for _ in range(300))
    registry.close()
    assert len(picks) == 3
    assert min(picks.values()) >= 60  # about 100 each; ties no longer all go to the first


def test_the_heartbeat_registers_again_after_an_agent_restart(fresh_consul: DevAgent, unique: str) -> None:
    registry = ConsulRegistry(
        f"beat-{unique}", 8080, consul_host="127.0.0.1", consul_port=fresh_consul.ports.http, ttl_interval=3
    )
    registry.register()
    registry.start_heartbeat(every=0.2)
    try:
        assert registry.service_id in services(fresh_consul)
        fresh_consul.restart()  # a dev agent restarts empty
        wait_for(lambda: registry.service_id in services(fresh_consul), what="the registration back", timeout=30)
        wait_for(
            lambda: fresh_consul.api("GET", "/v1/agent/checks").get(registry.check_id, {}).get("Status") == "passing",
            what="the check passing again",
        )
    finally:
        registry.close()
    assert registry.service_id not in services(fresh_consul)
    deregister(fresh_consul, registry.service_id)
