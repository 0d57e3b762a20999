"""The root conftest of py-consul's API suite when it runs here (copied next to its ``tests/`` at run time).

py-consul's own root conftest starts Consul in Docker (1.20+); this one gives the same fixtures on throw-away
``consul agent -dev`` processes (the version this project tests against). With ``CM_PYCONSUL_MODE=ours``,
``consul.Consul`` is replaced, before any test module imports it, by ``manifest_runner.py_consul``: the same
py-consul API on this project's transport.
"""

from __future__ import annotations

import collections
import os
import uuid
from collections.abc import Iterator
from typing import Any

import consul
import consul.std
import pytest

from manifest_runner.testing.devagent import DevAgent, find_consul_binary

ConsulInstance = collections.namedtuple("ConsulInstance", ["container", "port", "version"])
HCL = ("enable_script_checks = true",)

if os.environ.get("CM_PYCONSUL_MODE") == "ours":
    from manifest_runner import py_consul

    class _Ours:
        """``consul.Consul(...)`` with py-consul's constructor, answered by ``manifest_runner.py_consul``."""

        def __new__(
            cls,
            host: str | None = None,
            port: int | None = None,
            token: str | None = None,
            scheme: str | None = None,
            consistency: str = "default",
            dc: str | None = None,
            verify: Any = None,
            cert: Any = None,
            connections_timeout: float | None = 30,
        ) -> Any:
            address = f"{scheme or 'http'}://{host or '127.0.0.1'}:{port or 8500}"
            return py_consul(
                http_addr=address, token=token, datacenter=dc, timeout=connections_timeout, consistency=consistency
            )

    consul.Consul = _Ours  # type: ignore[misc,assignment]
    consul.std.Consul = _Ours  # type: ignore[misc,assignment]


def _binary() -> str:
    binary = find_consul_binary()
    if binary is None:
        pytest.fail("no consul binary: set CONSUL_BIN")
    return binary


def _version(agent: DevAgent) -> str:
    return str(agent.api("GET", "/v1/agent/self")["Config"]["Version"]).strip()


@pytest.fixture(scope="session", autouse=True)
def _unset_consul_token() -> None:
    os.environ.pop("CONSUL_HTTP_TOKEN", None)


@pytest.fixture
def consul_instance() -> Iterator[Any]:
    with DevAgent(_binary(), extra_hcl=HCL) as agent:
        yield ConsulInstance(None, agent.ports.http, _version(agent))


@pytest.fixture
def acl_consul_instance() -> Iterator[Any]:
    token = str(uuid.uuid4())
    with DevAgent(_binary(), management_token=token, extra_hcl=HCL) as agent:
        yield ConsulInstance(None, agent.ports.http, _version(agent)), token


@pytest.fixture
def consul_port(consul_instance: Any) -> tuple[int, str]:
    return consul_instance.port, consul_instance.version
