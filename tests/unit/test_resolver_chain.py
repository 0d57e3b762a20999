"""The resolver's fallback chain without a network: Consul, then the last known good value, then the fallback."""

from __future__ import annotations

import threading
import time
from typing import Any

from manifest_runner.consul.base import Freshness
from manifest_runner.manifest.model import ServiceDependency
from manifest_runner.resolve.cache import LastKnownGood
from manifest_runner.resolve.resolver import Budget, Resolver
from tests.unit.scripted import Sent, answer, client_with, unreachable


def health(*instances: tuple[str, int, str]) -> list[dict[str, Any]]:
    return [
        {
            "Node": {"Node": "n1", "Address": "10.0.0.1", "Datacenter": "dc1"},
            "Service": {"ID": iid, "Service": "db", "Address": "10.0.0.2", "Port": port, "Tags": [], "Meta": {}},
            "Checks": [{"Status": status}],
        }
        for iid, port, status in instances
    ]


DB = ServiceDependency(service="db", strategy="first", fallback="localhost:5432")


def resolver_for(handler: Any) -> Resolver:
    client, _ = client_with(handler)
    return Resolver(client, LastKnownGood(None, "o"), clock=lambda: 1000.0)


def test_healthy_instances_from_consul() -> None:
    resolver = resolver_for(lambda _r: answer(200, health(("db-1", 5432, "passing")), index=9))
    [result] = resolver.resolve({"DB": DB}, Budget.of(5))
    assert (result.source, result.value, result.datacenter) == ("consul", "10.0.0.2:5432", "dc1")


def test_unreachable_consul_uses_the_last_known_good_value_then_the_fallback() -> None:
    answers = [answer(200, health(("db-1", 6000, "passing")), index=9)]

    def handler(request: Sent) -> Any:
        if answers:
            return answers.pop()
        return unreachable(request)

    resolver = resolver_for(handler)
    assert resolver.resolve({"DB": DB})[0].source == "consul"
    cached = resolver.resolve({"DB": DB})[0]
    assert (cached.source, cached.value) == ("cache", "10.0.0.2:6000")
    assert "unreachable" in cached.reason
    fresh = Resolver(resolver.client, LastKnownGood(None, "o"))
    assert fresh.resolve({"DB": DB})[0].source == "fallback"


def test_nothing_anywhere_leaves_a_required_dependency_unresolved() -> None:
    resolver = resolver_for(unreachable)
    [result] = resolver.resolve({"DB": ServiceDependency(service="db")})
    assert result.source == "none" and result.failed


def test_an_answer_that_is_not_consuls_is_not_trusted() -> None:
    resolver = resolver_for(lambda _r: answer(200, raw=b"<html>proxy login</html>"))
    [result] = resolver.resolve({"DB": DB})
    assert result.source == "fallback"
    assert "not what Consul sends" in result.reason


def test_once_consul_is_unreachable_the_other_dependencies_skip_it() -> None:
    calls: list[str] = []

    def handler(request: Sent) -> Any:
        calls.append(request.path)
        return unreachable(request)

    resolver = resolver_for(handler)
    resolver.resolve({f"D{i}": DB for i in range(5)})
    assert len(calls) == 1


def test_an_authoritative_no_healthy_instance_goes_to_the_fallback_not_the_cache() -> None:
    answers = [answer(200, [], index=10), answer(200, health(("db-1", 6000, "passing")), index=9)]
    resolver = resolver_for(lambda _r: answers.pop())
    assert resolver.resolve({"DB": DB})[0].source == "consul"
    [after] = resolver.resolve({"DB": DB})
    assert (after.source, after.value) == ("fallback", "localhost:5432")
    assert "no healthy instance of db" in after.reason


def test_a_failing_datacenter_moves_on_to_the_next_and_says_so() -> None:
    def handler(request: Sent) -> Any:
        if request.params.get("dc") == "dc2":
            return answer(500, raw=b"rpc error making call: No path to datacenter")
        return answer(200, health(("db-1", 5432, "passing")), index=3)

    resolver = resolver_for(handler)
    [result] = resolver.resolve({"DB": DB.model_copy(update={"datacenters": ["dc2", "dc1"]})})
    assert (result.source, result.value) == ("consul", "10.0.0.2:5432")
    assert "dc2" in result.reason and "No path to datacenter" in result.reason


def test_a_failed_datacenter_and_an_empty_one_is_not_an_authoritative_answer() -> None:
    dependency = DB.model_copy(update={"datacenters": ["dc2", "dc1"]})
    first = [answer(200, health(("db-1", 6000, "passing")), index=9)]

    def handler(request: Sent) -> Any:
        if first:
            return first.pop()
        if request.params.get("dc") == "dc2":
            return answer(500, raw=b"rpc error")
        return answer(200, [], index=4)

    resolver = resolver_for(handler)
    assert resolver.resolve({"DB": dependency})[0].source == "consul"
    [result] = resolver.resolve({"DB": dependency})
    assert (result.source, result.value) == ("cache", "10.0.0.2:6000")
    assert "dc2" in result.reason and "no healthy instance of db in dc1" in result.reason


def test_a_denied_read_uses_the_last_known_good_value() -> None:
    answers = [answer(403, raw=b"Permission denied"), answer(200, health(("db-1", 6000, "passing")), index=9)]
    resolver = resolver_for(lambda _r: answers.pop())
    resolver.resolve({"DB": DB})
    [result] = resolver.resolve({"DB": DB})
    assert result.source == "cache" and "refused" in result.reason


def test_a_stale_answer_from_a_server_out_of_touch_is_asked_again_of_the_leader() -> None:
    def handler(request: Sent) -> Any:
        reply = answer(200, health(("db-1", 5432, "passing")), index=3)
        if "stale" in request.params:
            reply.headers["X-Consul-LastContact"] = "9000"
        return reply

    client, transport = client_with(handler)
    resolver = Resolver(client, LastKnownGood(None, "o"))
    [result] = resolver.resolve({"DB": DB}, freshness=Freshness(max_stale=2.0))
    assert result.source == "consul"
    assert [("stale" in s.params) for s in transport.sent] == [True, False]
    assert client.stale_retries == 1


def test_a_recent_enough_stale_answer_is_used() -> None:
    def handler(request: Sent) -> Any:
        reply = answer(200, health(("db-1", 5432, "passing")), index=3)
        reply.headers["X-Consul-LastContact"] = "40"
        return reply

    client, transport = client_with(handler)
    Resolver(client, LastKnownGood(None, "o")).resolve({"DB": DB}, freshness=Freshness(max_stale=2.0))
    assert [s.params for s in transport.sent] == [{"passing": "1", "stale": ""}]


def test_dependencies_are_resolved_concurrently() -> None:
    in_flight, peak = [0], [0]
    lock = threading.Lock()

    def handler(_request: Sent) -> Any:
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        time.sleep(0.02)
        with lock:
            in_flight[0] -= 1
        return answer(200, health(("db-1", 5432, "passing")), index=3)

    resolver = resolver_for(handler)
    results = resolver.resolve({f"D{i:02d}": DB for i in range(40)})
    assert [r.name for r in results] == [f"D{i:02d}" for i in range(40)]
    assert all(r.source == "consul" for r in results)
    assert peak[0] > 1
