"""The resolver's fallback chain without a network: Consul, then the last known good value, then the fallback."""

from __future__ import annotations

from typing import Any

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
