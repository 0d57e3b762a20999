"""ConsulRegistry's promises against real agents."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from manifest_runner import ConsulRegistry, ServiceNotFound
from manifest_runner.errors import ConsulUnavailable, LockTimeout
from manifest_runner.testing.devagent import DevAgent, free_port
from tests.integration.helpers import call, register, services
from tests.integration.runproc import wait_for

pytestmark = pytest.mark.consul


@pytest.fixture
def registry(consul_env: DevAgent, unique: str) -> Iterator[ConsulRegistry]:
    with_registry = ConsulRegistry(f"client-{unique}", 7000)
    yield with_registry
    with_registry.close()


def three(agent: DevAgent, name: str, weights: tuple[int, int, int] = (1, 1, 1)) -> list[str]:
    ids = [f"{name}-{k}" for k in "abc"]
    for n, (instance_id, weight) in enumerate(zip(ids, weights, strict=True)):
        register(
            agent,
            {
                "ID": instance_id,
                "Name": name,
                "Address": "127.0.0.1",
                "Port": 9000 + n,
                "Weights": {"Passing": weight, "Warning": 1},
                "Check": {"CheckID": f"service:{instance_id}", "TTL": "1h", "Status": "passing"},
            },
        )
    return [f"127.0.0.1:{9000 + n}" for n in range(3)]


def test_round_robin_cycles_through_all_three(registry: ConsulRegistry, consul: DevAgent, unique: str) -> None:
    endpoints = three(consul, f"rr-{unique}")
    picks = [registry.get_service_endpoint(f"rr-{unique}", strategy="round_robin") for _ in range(6)]
    assert picks == endpoints + endpoints


def test_least_connections_follows_in_flight_uses(registry: ConsulRegistry, consul: DevAgent, unique: str) -> None:
    name = f"lc-{unique}"
    endpoints = three(consul, name)
    with registry.connection(name) as first, registry.connection(name) as second:
        assert first != second and {first, second} <= set(endpoints)  # each to an idle instance
        with registry.connection(name) as third:
            assert {first, second, third} == set(endpoints)
            assert registry.get_service_endpoint(name, strategy="least_connections") in endpoints  # all at 1
        assert registry.get_service_endpoint(name, strategy="least_connections") == third  # the only one at 0
    assert registry.discovery.in_flight() == {}


def test_health_weighted_follows_the_weights(registry: ConsulRegistry, consul: DevAgent, unique: str) -> None:
    name = f"hw-{unique}"
    endpoints = three(consul, name, weights=(1, 2, 7))
    registry.watch_service(name)  # served from the watched cache: 5,000 picks, no request each
    wait_for(lambda: registry.discovery.instances(name, None, None, True), what="cache filled")
    picks = Counter(registry.get_service_endpoint(name) for _ in range(5000))
    for endpoint, weight in zip(endpoints, (1, 2, 7), strict=True):
        assert abs(picks[endpoint] / 5000 - weight / 10) < 0.03, picks


def test_a_critical_instance_is_never_returned(registry: ConsulRegistry, consul: DevAgent, unique: str) -> None:
    name = f"crit-{unique}"
    endpoints = three(consul, name)
    call(consul, "PUT", f"/v1/agent/check/fail/service:{name}-b")
    for strategy in ("health_weighted", "random", "round_robin", "least_connections"):
        picks = {registry.get_service_endpoint(name, strategy=strategy) for _ in range(30)}
        assert endpoints[1] not in picks, strategy
    assert endpoints[1] not in {f"{i['address']}:{i['port']}" for i in registry.discover_service(name)}
    everything = registry.discover_service(name, passing_only=False)
    assert {i["status"] for i in everything} == {"passing", "critical"}


def test_no_instance_and_no_fallback_raises(registry: ConsulRegistry, unique: str) -> None:
    with pytest.raises(ServiceNotFound):
        registry.get_service_endpoint(f"nothing-{unique}")
    assert registry.get_service_endpoint(f"nothing-{unique}", fallback_url="x:1") == "x:1"


def test_two_registries_on_one_port_coexist(consul_env: DevAgent, unique: str) -> None:
    first = ConsulRegistry(f"twin-{unique}", 8080)
    second = ConsulRegistry(f"twin-{unique}", 8080)
    assert first.service_id != second.service_id
    assert first.register() and second.register()
    ids = {i["id"] for i in first.discover_service(f"twin-{unique}")}
    assert ids == {first.service_id, second.service_id}
    first.deregister()
    assert {i["id"] for i in second.discover_service(f"twin-{unique}")} == {second.service_id}
    second.close()


def test_typed_configuration(registry: ConsulRegistry) -> None:
    values = {
        "port_text": "5432",
        "port": 5432,
        "ratio": 0.5,
        "on": True,
        "list": [1, "a"],
        "map": {"k": [None]},
        "empty": "",
    }
    for key, value in values.items():
        assert registry.set_config(f"typed/{key}", value) is True
    for key, value in values.items():
        got = registry.get_config(f"typed/{key}")
        assert got == value and type(got) is type(value), key
    assert registry.get_config("typed/absent") is None
    assert registry.get_config("typed/absent", default=7) == 7
    assert registry.get_all_config("typed/") == {f"typed/{k}": v for k, v in values.items()}


def test_consul_unavailable_falls_back_and_says_so_once(
    caplog: pytest.LogCaptureFixture, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = ConsulRegistry(f"down-{unique}", 1, consul_host="127.0.0.1", consul_port=free_port())
    with caplog.at_level(logging.WARNING, logger="consul_manifest.registry"):
        assert registry.get_service_endpoint("db", fallback_url="localhost:5432") == "localhost:5432"
        assert registry.get_service_endpoint("db", fallback_url="localhost:5432") == "localhost:5432"
        assert registry.get_redis_url() == "redis://localhost:6379"
        assert registry.get_config("x", default="d") == "d"
    warnings = [r for r in caplog.records if "Consul is unavailable" in r.getMessage()]
    assert len(warnings) == 1
    with pytest.raises(ConsulUnavailable):
        registry.get_service_endpoint("db")
    with pytest.raises(ConsulUnavailable):
        registry.get_config("x")
    with pytest.raises(ConsulUnavailable):
        registry.register()
    pauses: list[float] = []
    monkeypatch.setattr("manifest_runner.library.registry.time.sleep", pauses.append)
    assert registry.get_service_address("db", fallback_url="f:1", max_retries=3, backoff=0.05) == "f:1"
    assert pauses == []  # Consul is known to be down (the circuit is open): no retry, no wait
    assert registry.circuit.trips == 1


def test_retries_back_off_while_a_service_has_no_healthy_instance(
    registry: ConsulRegistry, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    pauses: list[float] = []
    monkeypatch.setattr("manifest_runner.library.registry.time.sleep", pauses.append)
    assert registry.get_service_address(f"none-{unique}", fallback_url="f:1", max_retries=3, backoff=0.05) == "f:1"
    assert pauses == [0.05, 0.1]  # it backed off between retries, it did not spin


def test_the_agent_is_found_without_an_address(consul: DevAgent, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CONSUL_") and name != "CONSUL_BIN":
            monkeypatch.delenv(name)
    dead = f"127.0.0.1:{free_port()}"
    registry = ConsulRegistry("finder", 1, consul_addresses=[dead, consul.http_addr])
    assert registry.client.endpoint.port == consul.ports.http  # 127.0.0.1:8500 had nobody: the list was tried
    monkeypatch.setenv("CONSUL_HTTP_ADDR", consul.http_addr)
    assert ConsulRegistry("finder", 1).client.endpoint.port == consul.ports.http


def test_a_watch_serves_lookups_from_its_cache(registry: ConsulRegistry, consul: DevAgent, unique: str) -> None:
    name = f"watched-{unique}"
    three(consul, name)
    seen: list[list[dict[str, object]]] = []
    handle = registry.watch_service(name, seen.append)
    wait_for(lambda: seen and len(seen[-1]) == 3, what="first callback")
    before = registry.client.request_counts().get("GET", 0)
    for _ in range(100):
        registry.get_service_endpoint(name)
    assert registry.client.request_counts().get("GET", 0) == before
    call(consul, "PUT", f"/v1/agent/check/fail/service:{name}-a")
    wait_for(lambda: len(seen[-1]) == 2, what="the change seen")
    assert "127.0.0.1:9000" not in {registry.get_service_endpoint(name) for _ in range(50)}
    handle.stop()
    registry.get_service_endpoint(name)
    assert registry.client.request_counts().get("GET", 0) == before + 1  # stopped: back to one request a lookup


def test_datacenters(consul_wan: tuple[DevAgent, DevAgent], unique: str, monkeypatch: pytest.MonkeyPatch) -> None:
    dc1, dc2 = consul_wan
    monkeypatch.setenv("CONSUL_HTTP_ADDR", dc1.http_addr)
    name = f"multi-{unique}"
    register(
        dc2,
        {
            "ID": f"{name}-2",
            "Name": name,
            "Address": "127.0.0.2",
            "Port": 1,
            "Check": {"TTL": "1h", "Status": "passing"},
        },
    )
    registry = ConsulRegistry(f"dc-client-{unique}", 1)
    assert registry.discover_service(name) == []
    assert [i["datacenter"] for i in registry.discover_service(name, datacenter="dc2")] == ["dc2"]
    assert registry.get_service_endpoint(name, datacenters=["dc1", "dc2"]) == "127.0.0.2:1"


def test_a_killed_ttl_instance_is_reaped(consul_env: DevAgent, unique: str, tmp_path: Path) -> None:
    script = tmp_path / "instance.py"
    script.write_text(
        textwrap.dedent(f"""
        import time
        from manifest_runner import ConsulRegistry
        registry = ConsulRegistry("reaped-{unique}", 7100, ttl_interval=10, deregister_after="1m")
        registry.register()
        registry.start_heartbeat(every=1)
        print(registry.service_id, flush=True)
        time.sleep(600)
    """)
    )
    process = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "CONSUL_HTTP_ADDR": consul_env.http_addr},
    )
    assert process.stdout is not None
    service_id = process.stdout.readline().strip()
    wait_for(lambda: service_id in services(consul_env), what="registered")
    process.send_signal(signal.SIGKILL)
    process.wait()
    # TTL (10 s) -> critical; deregister_critical_after (1 m, Consul's minimum) and the 30 s reaper -> gone
    wait_for(lambda: service_id not in services(consul_env), timeout=150, what="reaped")


HOLDER = """
import sys, time
from manifest_runner import ConsulRegistry
registry = ConsulRegistry("locker", 1)
log = open(sys.argv[1], "a")
for _ in range(int(sys.argv[2])):
    with registry.lock("shared-{unique}", ttl=10, timeout=60, lock_delay=1):
        log.write(f"in {{sys.argv[3]}}\\n"); log.flush()
        time.sleep(0.03)
        log.write(f"out {{sys.argv[3]}}\\n"); log.flush()
"""


def test_two_processes_never_hold_one_lock_together(consul_env: DevAgent, unique: str, tmp_path: Path) -> None:
    script = tmp_path / "holder.py"
    script.write_text(HOLDER.format(unique=unique))
    journal = tmp_path / "journal"
    env = {**os.environ, "CONSUL_HTTP_ADDR": consul_env.http_addr}
    holders = [
        subprocess.Popen([sys.executable, str(script), str(journal), "15", name], env=env) for name in ("A", "B")
    ]
    for holder in holders:
        assert holder.wait(120) == 0
    lines = journal.read_text().splitlines()
    assert len(lines) == 60
    for enter, leave in zip(lines[::2], lines[1::2], strict=True):
        assert enter.startswith("in ") and leave == "out " + enter[3:], lines


def test_a_killed_holder_loses_the_lock(consul_env: DevAgent, unique: str, tmp_path: Path) -> None:
    script = tmp_path / "holder.py"
    script.write_text(
        textwrap.dedent(f"""
        import time
        from manifest_runner import ConsulRegistry
        registry = ConsulRegistry("killed", 1)
        lock = registry.lock("doomed-{unique}", ttl=10, lock_delay=1)
        lock.acquire()
        print("held", flush=True)
        time.sleep(600)
    """)
    )
    process = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "CONSUL_HTTP_ADDR": consul_env.http_addr},
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "held"
    registry = ConsulRegistry("waiter", 1)
    assert registry.try_lock(f"doomed-{unique}") is None
    with pytest.raises(LockTimeout), registry.lock(f"doomed-{unique}", timeout=1):
        pass
    process.send_signal(signal.SIGKILL)
    process.wait()
    with registry.lock(f"doomed-{unique}", ttl=10, timeout=60) as lock:  # free after the TTL (<= 2x) + delay
        assert lock.held


def test_leader_election_hands_over(consul_env: DevAgent, unique: str) -> None:
    events: list[str] = []
    first = ConsulRegistry("elector", 1).leader_election(f"lead-{unique}", on_elected=lambda: events.append("A"))
    wait_for(lambda: first.is_leader, what="first elected")
    second = ConsulRegistry("elector", 1).leader_election(f"lead-{unique}", on_elected=lambda: events.append("B"))
    wait_for(lambda: second.attempts >= 2, what="the second campaign tried")
    assert not second.is_leader
    first.stop()
    wait_for(lambda: second.is_leader, timeout=30, what="second elected")
    second.stop()
    assert events == ["A", "B"]


def test_context_manager_registers_heartbeats_and_deregisters(consul_env: DevAgent, unique: str) -> None:
    with ConsulRegistry(f"ctx-{unique}", 7200, ttl_interval=10) as registry:
        service_id = registry.service_id
        assert service_id in services(consul_env)
        checks = call(consul_env, "GET", "/v1/agent/checks")[2]
        assert checks[f"service:{service_id}"]["Status"] == "passing"
    assert service_id not in services(consul_env)


def test_the_seed_defaults(consul_env: DevAgent, unique: str) -> None:
    registry = ConsulRegistry(f"defaults-{unique}", 7300)
    check = registry.registration()["Check"]
    assert check["TTL"] == "30s" and check["DeregisterCriticalServiceAfter"] == "1m"
    assert "Address" not in registry.registration()  # a local agent: the node's address is the service's
    threading.Thread(target=registry.register).start()
    wait_for(lambda: registry.service_id in services(consul_env), what="registered")
    registry.close()
