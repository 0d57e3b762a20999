"""Every example of the seed description (docs/library.md: the original text, the import line changed) runs, in
order, in one namespace, against a real agent on localhost:8500, the address the examples name; then what each one
promises is checked.

The environment is arranged, never the examples' code: the services they look up are registered beforehand; their
`while True:` loops end with the KeyboardInterrupt the examples expect (time.sleep is fast-forwarded and the third
sleep interrupts); atexit hooks run at the end of the test, while the agent still runs.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from manifest_runner.testing.devagent import AgentPorts, DevAgent, free_port
from tests.integration.helpers import call, register, services

pytestmark = pytest.mark.consul

DOC = Path(__file__).parent.parent.parent / "docs" / "library.md"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


@pytest.fixture(scope="module")
def agent_on_8500(consul_binary: str) -> Iterator[DevAgent]:
    ports = AgentPorts(8500, free_port(), free_port(), free_port())
    try:
        with DevAgent(consul_binary, ports=ports) as agent:
            yield agent
    except Exception as err:  # noqa: BLE001
        pytest.fail(f"the seed's examples name localhost:8500, and an agent cannot listen there: {err}")


class Gateway:
    """What 'api-gateway' answers: GET /api/v1/users."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = json.dumps([{"id": 1, "name": "ada"}]).encode() if self.path == "/api/v1/users" else b"{}"
                self.send_response(200 if self.path == "/api/v1/users" else 404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.port = self.server.server_address[1]


def passing(service_id: str, name: str, port: int, address: str = "127.0.0.1") -> dict[str, Any]:
    return {
        "ID": service_id,
        "Name": name,
        "Address": address,
        "Port": port,
        "Check": {"CheckID": f"service:{service_id}", "TTL": "1h", "Status": "passing"},
    }


class Churn:
    """Changes to api-service every 100 ms, for the watching example's blocking query to return on."""

    def __init__(self, agent: DevAgent) -> None:
        self.done = threading.Event()

        def churn() -> None:
            flip = False
            while not self.done.wait(0.1):
                flip = not flip
                if flip:
                    register(agent, passing("api-service-churn", "api-service", 9999))
                else:
                    call(agent, "PUT", "/v1/agent/service/deregister/api-service-churn")

        self.thread = threading.Thread(target=churn, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.done.set()
        self.thread.join()


class Sleeps:
    """time.sleep, fast-forwarded; the third call in a block raises KeyboardInterrupt (ends `while True:` loops)."""

    def __init__(self) -> None:
        self.real = time.sleep
        self.calls = 0

    def __call__(self, seconds: float) -> None:
        self.calls += 1
        if self.calls >= 3:
            raise KeyboardInterrupt
        self.real(min(seconds, 0.01))


def test_every_seed_example_runs_and_keeps_its_promise(
    agent_on_8500: DevAgent, monkeypatch: pytest.MonkeyPatch
) -> None:
    agent = agent_on_8500
    for name in list(__import__("os").environ):
        if name.startswith("CONSUL_") and name != "CONSUL_BIN":
            monkeypatch.delenv(name)
    gateway = Gateway()
    register(agent, passing("database-service-1", "database-service", 5432))
    register(agent, passing("database-service-2", "database-service", 5433))
    register(agent, passing("api-gateway-1", "api-gateway", gateway.port))
    exit_hooks: list[Callable[[], Any]] = []
    monkeypatch.setattr(atexit, "register", lambda fn, *a, **k: exit_hooks.append(lambda: fn(*a, **k)) or fn)
    assert len(BLOCKS) == 24

    namespace: dict[str, Any] = {"__name__": "seed_examples"}
    outputs: list[str] = []
    for index, block in enumerate(BLOCKS):
        sleeps = Sleeps()
        monkeypatch.setattr(time, "sleep", sleeps)
        out = io.StringIO()
        churn = Churn(agent) if "index=index" in block else None  # the watching example waits for changes
        with contextlib.redirect_stdout(out):
            try:
                exec(compile(block, f"docs/library.md block {index}", "exec"), namespace)  # noqa: S102
            except KeyboardInterrupt:
                assert "while True" in block, f"block {index} was interrupted but has no loop"
            finally:
                if churn is not None:
                    churn.stop()
        monkeypatch.setattr(time, "sleep", sleeps.real)
        outputs.append(out.getvalue())
        CHECKS.get(index, lambda *_: None)(namespace, outputs[-1], agent)

    for hook in exit_hooks:
        hook()
    names = {s["Service"] for s in services(agent).values()}
    assert "worker-service" not in names  # the TTL example deregistered on KeyboardInterrupt


def check_simple_usage(ns: dict[str, Any], out: str, agent: DevAgent) -> None:
    assert out.startswith("Service registered: my-api-service-")
    assert {i["id"] for i in ns["instances"]} == {"database-service-1", "database-service-2"}
    assert all({"id", "address", "port", "tags"} <= set(i) for i in ns["instances"])
    assert ns["db_url"] in ("127.0.0.1:5432", "127.0.0.1:5433")
    assert ns["db_config"] == "postgresql://localhost:5432/db"
    assert ns["registry"].service_id not in services(agent)  # deregistered at the end


def check_real_service(ns: dict[str, Any], out: str, agent: DevAgent) -> None:
    service = ns["APIService"]("orders-service", 9001)
    assert service.registry.service_id in services(agent)
    assert service.connect_to_database() == "postgresql://localhost:5432/mydb"  # no postgres-service: fallback
    assert service.connect_to_cache() == "redis://localhost:6379"
    assert service.save_config("cache/ttl", 3600) is True
    assert service.save_config("features/flag", True) is True
    config = service.get_application_config()
    assert config["cache_ttl"] == 3600
    assert config["feature_flags"] == {"features/flag": True}
    assert config["database_url"] is None
    assert service.discover_all_api_services() == ["127.0.0.1:9001"]
    service.maintain_health()  # registry.consul.agent.check.ttl_pass: the py-consul client, on our connection
    ns["orders"] = service


def check_ttl_registration(ns: dict[str, Any], out: str, agent: DevAgent) -> None:
    registration = services(agent)[ns["registry"].service_id]
    assert registration["Tags"] == ["api", "internal", "v1.0.0"]
    assert "✅ Service registered: api-service-" in out


def check_http_registration(ns: dict[str, Any], out: str, agent: DevAgent) -> None:
    registry = ns["registry"]
    assert registry.registration()["Check"]["HTTP"].endswith(":8000/health")
    assert registry.registration()["Check"]["Interval"] == "10s"
    assert registry.registration()["Check"]["DeregisterCriticalServiceAfter"] == "1m"
    assert registry.service_id in services(agent)


def check_discover(ns: dict[str, Any], out: str, agent: DevAgent) -> None:
    assert "ID: database-service-1" in out and "Address: 127.0.0.1:5433" in out


def check_endpoint(ns: dict[str, Any], out: str, agent: DevAgent) -> None:
    assert ns["endpoint"] == f"127.0.0.1:{agent_gateway_port(agent)}"
    assert ns["response"].json() == [{"id": 1, "name": "ada"}]


def agent_gateway_port(agent: DevAgent) -> int:
    return int(services(agent)["api-gateway-1"]["Port"])


def check_strategies(ns: dict[str, Any], out: str, agent: DevAgent) -> None:
    api = {f"127.0.0.1:{s['Port']}" for s in services(agent).values() if s["Service"] == "api-service"}
    assert ns["endpoint"] in api


def check_fallback(ns: dict[str, Any], out: str, agent: DevAgent) -> None:
    assert ns["url"] == "localhost:6379"


def check_config(ns: dict[str, Any], out: str, agent: DevAgent) -> None:
    assert ns["db_url"] == "postgresql://localhost:5432/mydb"
    assert ns["cache_ttl"] == 3600 and type(ns["cache_ttl"]) is int
    assert ns["all_config"]["features/new_ui"] is True
    assert ns["database_config"] == {"database/url": "postgresql://localhost:5432/mydb", "database/pool_size": 20}


def check_infrastructure(ns: dict[str, Any], out: str, agent: DevAgent) -> None:
    assert (ns["nats_url"], ns["redis_url"], ns["loki_url"], ns["minio_url"], ns["duckdb_url"]) == (
        "nats://localhost:4222",
        "redis://localhost:6379",
        "http://localhost:3100",
        "localhost:9000",
        "localhost:50052",
    )


def check_multi_instance(ns: dict[str, Any], out: str, agent: DevAgent) -> None:
    ids = {i["id"] for i in ns["all_instances"]}
    assert {r.service_id for r in ns["instances"]} <= ids
    picks = re.findall(r"Request \d → (\S+)", out)
    assert len(picks) == 5
    ring = sorted(f"{i['address']}:{i['port']}" for i in ns["all_instances"])
    assert len(set(picks)) == min(5, len(ring))  # round_robin: no repeat before the ring is done


def check_ttl_loop(ns: dict[str, Any], out: str, agent: DevAgent) -> None:
    assert ns["registry"].service_id not in services(agent)


def check_watching(ns: dict[str, Any], out: str, agent: DevAgent) -> None:
    assert "Service instances changed:" in out
    assert "- api-service-" in out


def check_raw_client(ns: dict[str, Any], out: str, agent: DevAgent) -> None:
    assert ns["db_url"] in ("127.0.0.1:5432", "127.0.0.1:5433")
    assert ns["service_id"] not in services(agent)


def check_four_lines(ns: dict[str, Any], out: str, agent: DevAgent) -> None:
    assert ns["db_url"] in ("127.0.0.1:5432", "127.0.0.1:5433")
    assert ns["registry"].service_id not in services(agent)


def check_critical_service(ns: dict[str, Any], out: str, agent: DevAgent) -> None:
    assert ns["url"] == "localhost:8080"


def check_typed_config(ns: dict[str, Any], out: str, agent: DevAgent) -> None:
    assert ns["registry"].get_config("cache/enabled") is True


CHECKS: dict[int, Callable[[dict[str, Any], str, DevAgent], None]] = {
    0: check_simple_usage,
    1: check_real_service,
    2: check_ttl_registration,
    3: check_http_registration,
    4: check_discover,
    5: check_endpoint,
    6: check_strategies,
    7: check_fallback,
    9: check_config,
    10: check_infrastructure,
    11: check_multi_instance,
    12: check_ttl_loop,
    14: check_watching,
    15: check_raw_client,
    16: check_four_lines,
    20: check_critical_service,
    21: check_typed_config,
}
