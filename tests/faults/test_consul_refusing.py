"""Consul down, silent, refusing (ACL) or speaking TLS: a clear one-line message, exit 4, no token anywhere."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from manifest_runner.cli import EXIT_CONSUL, EXIT_OK
from manifest_runner.testing.devagent import DevAgent, free_port
from tests.conftest import ACL_TOKEN
from tests.integration.helpers import call, run_process, write

pytestmark = pytest.mark.consul

CANARY = "7f1de29e-6da1-4c7a-b1c2-0ca0a7700001"  # a recognisable UUID: it must appear in no output
MANIFEST = """
version: 1
owner: {owner}
services:
  - {{name: {owner}, port: 8080, checks: [{{ttl: 1m}}]}}
kv:
  prefix: {owner}/
  enforce: {{a: 1}}
"""


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_unreachable_consul_exits_4_with_one_line(tmp_path: Path) -> None:
    path = write(tmp_path, "m.yaml", MANIFEST.format(owner="down"))
    port = free_port()
    for command in (["apply"], ["plan"], ["destroy", "--yes"]):
        result = run_process(f"127.0.0.1:{port}", *command, str(path), env={"CONSUL_HTTP_TOKEN": CANARY}, timeout=30)
        assert result.returncode == EXIT_CONSUL, result.stderr
        (line,) = error_lines(result)
        first = "agent/services" if command == ["plan"] else "kv/consul-manifest/locks/down"  # an applier's first read
        assert line.startswith(f"error: GET /v1/{first}: cannot reach Consul at http://127.0.0.1:"), line
        assert "Connection refused" in line
        assert CANARY not in result.stdout + result.stderr


def test_a_silent_consul_times_out_with_exit_4(tmp_path: Path) -> None:
    path = write(tmp_path, "m.yaml", MANIFEST.format(owner="silent"))
    with socket.socket() as listener:  # accepts connections into its backlog and never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        result = run_process(address, "apply", "--timeout", "1", str(path), timeout=30)
    assert result.returncode == EXIT_CONSUL
    (line,) = error_lines(result)
    assert line == f"error: GET /v1/kv/consul-manifest/locks/silent: no answer from http://{address} within 1s"


@pytest.fixture(scope="module")
def read_only_token(consul_acl: DevAgent) -> str:
    rules = (
        'key_prefix "" { policy = "read" }\nservice_prefix "" { policy = "read" }\nnode_prefix "" { policy = "read" }'
    )
    status, _, policy = call(consul_acl, "PUT", "/v1/acl/policy", json.dumps({"Name": "read-only", "Rules": rules}))
    assert status == 200, policy
    token = {"SecretID": CANARY, "Description": "read only", "Policies": [{"ID": policy["ID"]}]}
    status, _, body = call(consul_acl, "PUT", "/v1/acl/token", json.dumps(token))
    assert status == 200, body
    return CANARY


def test_a_token_without_write_rights_exits_4_naming_the_operation(
    consul_acl: DevAgent, read_only_token: str, tmp_path: Path
) -> None:
    path = write(tmp_path, "m.yaml", MANIFEST.format(owner="acl-ro"))
    plan = run_process(
        consul_acl.http_addr, "plan", "--detailed-exitcode", str(path), env={"CONSUL_HTTP_TOKEN": read_only_token}
    )
    assert plan.returncode == 2, plan.stderr  # reading is allowed
    result = run_process(consul_acl.http_addr, "apply", str(path), env={"CONSUL_HTTP_TOKEN": read_only_token})
    assert result.returncode == EXIT_CONSUL, result.stdout + result.stderr
    (line,) = error_lines(result)
    assert line.startswith("error: PUT /v1/session/create -> HTTP 403: permission denied")
    for output in (result.stdout, result.stderr, plan.stdout, plan.stderr):
        assert read_only_token not in output
    status, _, _ = call(consul_acl, "GET", "/v1/kv/acl-ro/a")
    assert status == 404


def test_a_token_file_is_honoured_and_never_printed(consul_acl: DevAgent, tmp_path: Path, read_only_token: str) -> None:
    path = write(tmp_path, "m.yaml", MANIFEST.format(owner="acl-file"))
    token_file = tmp_path / "token"
    token_file.write_text(ACL_TOKEN + "\n")
    ok = run_process(
        consul_acl.http_addr,
        "apply",
        str(path),
        env={"CONSUL_HTTP_TOKEN_FILE": str(token_file), "CONSUL_HTTP_TOKEN": read_only_token},
    )
    assert ok.returncode == EXIT_OK, ok.stderr  # the file (management token) wins over the variable
    assert ACL_TOKEN not in ok.stdout + ok.stderr
    denied = run_process(
        consul_acl.http_addr,
        "apply",
        str(path),
        "--token",
        read_only_token,
        env={"CONSUL_HTTP_TOKEN_FILE": str(token_file)},
    )
    assert denied.returncode == EXIT_OK  # nothing to do: no write needed, reads allowed
    destroyed = run_process(
        consul_acl.http_addr,
        "destroy",
        "--yes",
        str(path),
        "--token",
        read_only_token,
        env={"CONSUL_HTTP_TOKEN_FILE": str(token_file)},
    )
    assert destroyed.returncode == EXIT_CONSUL  # the flag's read-only token beats the file in the environment
    assert read_only_token not in destroyed.stdout + destroyed.stderr


# -- TLS --------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_agent(consul_binary: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DevAgent, Path, int]]:
    certs = tmp_path_factory.mktemp("certs")
    for args in (
        ["tls", "ca", "create"],
        ["tls", "cert", "create", "-server", "-dc", "dc1"],
        ["tls", "cert", "create", "-client", "-dc", "dc1"],
    ):
        subprocess.run([consul_binary, *args], cwd=certs, check=True, capture_output=True)
    https = free_port()
    hcl = (
        f"ports {{ https = {https} }}",
        f'ca_file = "{certs}/consul-agent-ca.pem"',
        f'cert_file = "{certs}/dc1-server-consul-0.pem"',
        f'key_file = "{certs}/dc1-server-consul-0-key.pem"',
        "verify_incoming_https = true",
    )
    with DevAgent(consul_binary, extra_hcl=hcl) as agent:
        yield agent, certs, https


def tls_env(certs: Path, **extra: str) -> dict[str, str]:
    return {
        "CONSUL_CACERT": str(certs / "consul-agent-ca.pem"),
        "CONSUL_CLIENT_CERT": str(certs / "dc1-client-consul-0.pem"),
        "CONSUL_CLIENT_KEY": str(certs / "dc1-client-consul-0-key.pem"),
        **extra,
    }


def test_https_with_ca_and_client_certificate(tls_agent: tuple[DevAgent, Path, int], tmp_path: Path) -> None:
    _, certs, port = tls_agent
    path = write(tmp_path, "m.yaml", MANIFEST.format(owner="tls-ok"))
    result = run_process(f"https://127.0.0.1:{port}", "apply", str(path), env=tls_env(certs))
    assert result.returncode == EXIT_OK, result.stderr
    # CONSUL_HTTP_SSL=true turns a bare host:port into https, as Consul's own CLI does
    again = run_process(
        f"127.0.0.1:{port}", "plan", "--detailed-exitcode", str(path), env=tls_env(certs, CONSUL_HTTP_SSL="true")
    )
    assert again.returncode == EXIT_OK, again.stderr


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"CONSUL_CACERT": ""}, "certificate verify failed"),
        ({"CONSUL_CLIENT_CERT": "", "CONSUL_CLIENT_KEY": ""}, "TLS handshake"),
        ({"CONSUL_TLS_SERVER_NAME": "wrong.example"}, "TLS handshake"),
    ],
    ids=["unknown-ca", "no-client-certificate", "wrong-server-name"],
)
def test_tls_refusals_exit_4(
    tls_agent: tuple[DevAgent, Path, int], tmp_path: Path, change: dict[str, str], expected: str
) -> None:
    _, certs, port = tls_agent
    path = write(tmp_path, "m.yaml", MANIFEST.format(owner="tls-no"))
    env = {k: v for k, v in tls_env(certs, **change).items() if v}
    result = run_process(f"https://127.0.0.1:{port}", "plan", str(path), env=env)
    assert result.returncode == EXIT_CONSUL, result.stderr
    (line,) = error_lines(result)
    assert expected in line


def test_the_right_server_name_is_accepted(tls_agent: tuple[DevAgent, Path, int], tmp_path: Path) -> None:
    _, certs, port = tls_agent
    path = write(tmp_path, "m.yaml", MANIFEST.format(owner="tls-sni"))
    result = run_process(
        f"https://127.0.0.1:{port}", "plan", str(path), env=tls_env(certs, CONSUL_TLS_SERVER_NAME="server.dc1.consul")
    )
    assert result.returncode == EXIT_OK, result.stderr


# -- unix socket ------------------------------------------------------------------------------------------------


def test_a_unix_socket_address(consul_binary: str, tmp_path: Path) -> None:
    sock = tmp_path / "consul.sock"
    with DevAgent(consul_binary, extra_hcl=(f'addresses {{ http = "127.0.0.1 unix://{sock}" }}',)) as agent:
        path = write(tmp_path, "m.yaml", MANIFEST.format(owner="unix"))
        result = run_process(f"unix://{sock}", "apply", str(path))
        assert result.returncode == EXIT_OK, result.stderr
        _, _, services = call(agent, "GET", "/v1/agent/services")
        assert "unix-127.0.0.1-8080" not in services
        assert any(s["Service"] == "unix" for s in services.values())
