"""The fixtures start real agents the way every later test relies on: loopback, free ports, DNS and gRPC off,
ACLs enforced on the ACL agent, two datacenters joined over the WAN, and always stopped."""

from __future__ import annotations

import http.client
import json

from manifest_runner.testing.devagent import DevAgent
from tests.conftest import ACL_TOKEN


def request(agent: DevAgent, method: str, path: str, token: str | None = None, body: str | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", agent.ports.http, timeout=5)
    conn.request(method, path, body=body, headers={"X-Consul-Token": token} if token else {})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


def test_single_agent_on_loopback_with_dns_and_grpc_off(consul: DevAgent) -> None:
    me = consul.api("GET", "/v1/agent/self")
    config = me["DebugConfig"]
    assert me["Config"]["Datacenter"] == "dc1"
    assert config["DNSPort"] == -1
    assert config["GRPCPort"] == -1
    assert config["HTTPPort"] == consul.ports.http
    assert config["UIConfig"]["Enabled"] is False if "UIConfig" in config else config["EnableUI"] is False
    assert all(addr.startswith("tcp://127.0.0.1:") for addr in config["HTTPAddrs"])
    assert consul.api("GET", "/v1/status/leader")


def test_acl_agent_denies_anonymous_writes_and_accepts_the_management_token(consul_acl: DevAgent) -> None:
    status, body = request(consul_acl, "PUT", "/v1/kv/acl-check", body="x")
    assert status == 403, body
    status, body = request(consul_acl, "PUT", "/v1/kv/acl-check", token=ACL_TOKEN, body="x")
    assert (status, body.strip()) == (200, b"true")
    status, body = request(consul_acl, "GET", "/v1/agent/services")
    assert status == 200
    assert json.loads(body) == {}


def test_two_datacenters_see_each_other(consul_wan: tuple[DevAgent, DevAgent]) -> None:
    dc1, dc2 = consul_wan
    assert set(dc1.api("GET", "/v1/catalog/datacenters")) == {"dc1", "dc2"}
    request(dc2, "PUT", "/v1/kv/wan-check", body="from-dc2")
    status, body = request(dc1, "GET", "/v1/kv/wan-check?dc=dc2&raw")
    assert (status, body) == (200, b"from-dc2")


def test_an_agent_stops_for_good(consul_binary: str) -> None:
    agent = DevAgent(consul_binary).start()
    process = agent.process
    assert process is not None
    agent.stop()
    assert process.poll() is not None
    try:
        request(agent, "GET", "/v1/status/leader")
    except OSError:
        pass
    else:
        raise AssertionError("the agent still answers after stop()")


def test_a_restarted_dev_agent_has_forgotten_everything(fresh_consul: DevAgent) -> None:
    request(fresh_consul, "PUT", "/v1/kv/forgotten", body="x")
    fresh_consul.restart()
    status, _ = request(fresh_consul, "GET", "/v1/kv/forgotten")
    assert status == 404
