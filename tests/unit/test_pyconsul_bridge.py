"""The py-consul bridge's contract at the transport seam: every status reaches py-consul's callbacks (its own
exceptions, its own return values), py-consul's timeouts, and "no answer" as an error both kinds of callers catch."""

from __future__ import annotations

from typing import Any

import consul
import pytest

from manifest_runner.consul.pyconsul import BridgeUnavailable, facade
from manifest_runner.errors import ConsulUnavailable
from tests.unit.scripted import Sent, answer, client_with, unreachable


def test_statuses_reach_py_consuls_callbacks() -> None:
    replies = {
        "/v1/kv/secret": answer(403, raw=b"Permission denied"),
        "/v1/acl/tokens": answer(401, raw=b"ACL support disabled"),
        "/v1/agent/service/register": answer(400, raw=b"Invalid service"),
        "/v1/kv/missing": answer(404, index=7),
    }
    client, _ = client_with(lambda request: replies[request.path])
    c = facade(client)
    with pytest.raises(consul.ACLPermissionDenied):
        c.kv.get("secret")
    with pytest.raises(consul.ACLDisabled):
        c.acl.token.list()
    with pytest.raises(consul.ConsulException):
        c.agent.service.register("x", service_id="bad id")
    assert c.kv.get("missing") == ("7", None)


def test_a_429_from_autopilot_health_is_data_not_an_error() -> None:
    body = {"Healthy": False, "FailureTolerance": 0, "Servers": []}
    client, _ = client_with(lambda _request: answer(429, body))
    assert facade(client).operator.autopilot_health()["Healthy"] is False


def test_no_answer_is_both_py_consuls_and_our_error() -> None:
    client, _ = client_with(unreachable)
    with pytest.raises(consul.ConsulException) as caught:
        facade(client).status.leader()
    assert isinstance(caught.value, ConsulUnavailable) and isinstance(caught.value, BridgeUnavailable)


def test_py_consuls_timeouts() -> None:
    timeouts: list[float | None] = []
    client, transport = client_with(lambda _request: answer(200, [], index=3))
    original = transport.request

    def spy(*args: Any, **kwargs: Any) -> Any:
        timeouts.append(kwargs.get("timeout"))
        return original(*args, **kwargs)

    transport.request = spy  # type: ignore[method-assign]
    c = facade(client)
    c.catalog.nodes()
    c.catalog.nodes(index=3, wait="10s")
    facade(client, connections_timeout=2.0).catalog.nodes()
    assert timeouts == [30.0, 30.0 + 10 + 10 / 16, 2.0]


def test_the_configured_token_is_sent_and_a_call_s_own_token_wins() -> None:
    seen: list[str | None] = []

    def record(request: Sent) -> Any:
        seen.append(request.headers.get("X-Consul-Token"))
        return answer(200, [], index=1)

    client, _ = client_with(record, token="configured")
    c = facade(client)
    c.catalog.nodes()
    c.catalog.nodes(token="per-call")
    assert seen == ["configured", "per-call"]
