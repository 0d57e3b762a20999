"""Complete service definitions against a real agent: a Connect sidecar, tagged addresses and check options read
back from Consul, check ids from names, external services through the catalog (registered, updated, pruned), a
field newer than the agent refused before anything is sent, script checks only when opted in, and a namespace
refused on Consul without namespaces."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from manifest_runner.testing.devagent import DevAgent
from tests.integration.helpers import call, run_cli, services, write

pytestmark = pytest.mark.consul


def health_checks(agent: DevAgent, service: str) -> list[dict[str, Any]]:
    status, _, body = call(agent, "GET", f"/v1/health/checks/{service}")
    assert status == 200, body
    return list(body)


def catalog_node(agent: DevAgent, node: str) -> dict[str, Any] | None:
    status, _, body = call(agent, "GET", f"/v1/catalog/node/{node}")
    assert status == 200, body
    return body  # type: ignore[no-any-return]


def test_a_sidecar_tagged_addresses_and_named_checks(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    owner = f"mesh-{unique}"
    path = write(
        tmp_path,
        "m.yaml",
        f"""
version: 1
owner: {owner}
services:
  - name: web-{unique}
    id: web-{unique}
    port: 8080
    tagged_addresses:
      lan: {{address: 10.0.0.5, port: 8080}}
      wan: {{address: 203.0.113.5, port: 443}}
    connect:
      sidecar_service:
        proxy:
          upstreams:
            - {{destination_name: db-{unique}, local_bind_port: 9191}}
    checks:
      - name: alive
        ttl: 1m
        notes: kept by the service
        status: passing
      - name: http endpoint
        http: http://127.0.0.1:8080/health
        method: POST
        body: '{{"probe": true}}'
        header: {{X-Probe: [consul]}}
        success_before_passing: 2
        failures_before_critical: 3
        interval: 30s
""",
    )
    result = run_cli(consul, "apply", str(path))
    assert result.exit_code == 0, result.output
    registered = services(consul)
    web = registered[f"web-{unique}"]
    assert web["TaggedAddresses"] == {
        "lan": {"Address": "10.0.0.5", "Port": 8080},
        "wan": {"Address": "203.0.113.5", "Port": 443},
    }
    sidecar = registered[f"web-{unique}-sidecar-proxy"]
    assert sidecar["Kind"] == "connect-proxy"
    assert sidecar["Proxy"]["Upstreams"][0]["DestinationName"] == f"db-{unique}"
    assert sidecar["Proxy"]["Upstreams"][0]["LocalBindPort"] == 9191
    checks = {c["CheckID"]: c for c in health_checks(consul, f"web-{unique}")}
    assert set(checks) == {f"service:web-{unique}:alive", f"service:web-{unique}:http-endpoint"}
    alive = checks[f"service:web-{unique}:alive"]
    assert (alive["Name"], alive["Notes"], alive["Status"], alive["Type"]) == (
        "alive",
        "kept by the service",
        "passing",
        "ttl",
    )
    assert checks[f"service:web-{unique}:http-endpoint"]["Type"] == "http"

    again = run_cli(consul, "plan", "--detailed-exitcode", str(path))
    assert again.exit_code == 0, again.output  # the sidecar is part of the registration, not a service to prune

    assert run_cli(consul, "destroy", "--yes", str(path)).exit_code == 0
    gone = services(consul)
    assert f"web-{unique}" not in gone and f"web-{unique}-sidecar-proxy" not in gone


def test_an_external_service_goes_through_the_catalog_and_is_pruned(
    consul: DevAgent, tmp_path: Path, unique: str
) -> None:
    owner = f"ext-{unique}"
    node = f"legacy-{unique}"
    body = f"""
version: 1
owner: {owner}
services:
  - name: billing-db-{unique}
    id: billing-db-{unique}
    port: 5432
    tags: [{{tag}}]
    node: {{{{name: {node}, address: 192.0.2.10}}}}
    checks:
      - name: tcp
        tcp: 192.0.2.10:5432
        interval: 15s
      - name: http
        http: https://192.0.2.10/health
        method: HEAD
        tls_skip_verify: true
        header: {{{{X-Probe: [esm]}}}}
        timeout: 2s
"""
    path = write(tmp_path, "m.yaml", body.format(tag="v1"))
    result = run_cli(consul, "apply", str(path))
    assert result.exit_code == 0, result.output
    found = catalog_node(consul, node)
    assert found is not None
    assert found["Node"]["Address"] == "192.0.2.10"
    assert found["Node"]["Meta"]["external-node"] == "true" and found["Node"]["Meta"]["external-probe"] == "true"
    service = found["Services"][f"billing-db-{unique}"]
    assert service["Tags"] == ["v1"] and service["Port"] == 5432
    assert service["Meta"]["manifest-owner"] == owner
    assert f"billing-db-{unique}" not in services(consul)  # not on the applier's agent
    checks = {c["CheckID"]: c for c in health_checks(consul, f"billing-db-{unique}")}
    http = checks[f"service:billing-db-{unique}:http"]["Definition"]
    assert (http["HTTP"], http["Method"], http["TLSSkipVerify"], http["Header"], http["Timeout"]) == (
        "https://192.0.2.10/health",
        "HEAD",
        True,
        {"X-Probe": ["esm"]},
        "2s",
    )
    assert checks[f"service:billing-db-{unique}:tcp"]["Definition"]["TCP"] == "192.0.2.10:5432"

    no_change = run_cli(consul, "plan", "--detailed-exitcode", str(path))
    assert no_change.exit_code == 0, no_change.output
    write(tmp_path, "m.yaml", body.format(tag="v2"))
    planned = run_cli(consul, "plan", str(path))
    assert 'tags: ["v1"] -> ["v2"]' in planned.output, planned.output
    changed = run_cli(consul, "apply", str(path))
    assert changed.exit_code == 0 and "updated" in changed.output, changed.output
    assert catalog_node(consul, node)["Services"][f"billing-db-{unique}"]["Tags"] == ["v2"]  # type: ignore[index]

    write(tmp_path, "m.yaml", f"version: 1\nowner: {owner}\nkv: {{enforce: {{ext-{unique}/x: 1}}}}\n")
    pruned = run_cli(consul, "apply", "--prune", str(path))
    assert pruned.exit_code == 0, pruned.output
    assert catalog_node(consul, node) is None  # the service, its checks, and the node it was alone on
    assert health_checks(consul, f"billing-db-{unique}") == []


def test_a_field_newer_than_the_agent_is_refused_before_anything_is_sent(
    consul: DevAgent, tmp_path: Path, unique: str
) -> None:
    path = write(
        tmp_path,
        "m.yaml",
        f"""
version: 1
owner: new-{unique}
services:
  - name: sni-{unique}
    port: 443
    checks:
      - http: https://127.0.0.1/health
        tls_server_name: api.internal
kv: {{enforce: {{new-{unique}/k: 1}}}}
""",
    )
    result = run_cli(consul, "apply", str(path))
    assert result.exit_code == 4, result.output
    assert "tls_server_name needs Consul 1.10.0 or later" in result.output
    assert f"sni-{unique}" not in str(services(consul))
    status, _, _ = call(consul, "GET", f"/v1/kv/new-{unique}/k")
    assert status == 404  # nothing at all was written


def test_script_checks_need_the_manifest_to_opt_in(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    text = f"""
version: 1
owner: s-{unique}
{{opt_in}}services:
  - name: cron-{unique}
    checks:
      - args: [/usr/local/bin/check-cron]
        interval: 1m
"""
    path = write(tmp_path, "m.yaml", text.format(opt_in=""))
    refused = run_cli(consul, "validate", str(path))
    assert refused.exit_code == 3
    assert f"{path}:6:9" in refused.output  # at the check and "allow_script_checks: true" in refused.output
    write(tmp_path, "m.yaml", text.format(opt_in="allow_script_checks: true\n"))
    assert run_cli(consul, "validate", str(path)).exit_code == 0
    agent_refuses = run_cli(consul, "apply", str(path))  # the dev agent does not enable script checks
    assert agent_refuses.exit_code in (1, 4) and "enable_script_checks" in agent_refuses.output


def test_a_namespace_on_consul_without_namespaces_is_refused(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    path = write(tmp_path, "m.yaml", f"version: 1\nowner: ns-{unique}\nkv: {{enforce: {{ns-{unique}/k: 1}}}}\n")
    for extra, env in ((["--namespace", "team-a"], None), ([], {"CONSUL_NAMESPACE": "team-a"})):
        result = run_cli(consul, "apply", *extra, str(path), extra_env=env)
        assert result.exit_code == 4, result.output
        assert "not Consul Enterprise" in result.output and "team-a" in result.output
    status, _, _ = call(consul, "GET", f"/v1/kv/ns-{unique}/k")
    assert status == 404
    default = run_cli(consul, "apply", "--namespace", "default", str(path))
    assert default.exit_code == 0, default.output  # "default" is what OSS Consul has
