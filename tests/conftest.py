"""Fixtures shared by every test: real Consul agents on loopback, started by the suite itself.

- ``consul``: one dev agent for the session (per xdist worker); tests isolate themselves by unique names.
- ``fresh_consul``: a dev agent of the test's own, for tests that kill or restart it.
- ``consul_acl``: a dev agent with ACLs on, ``default_policy = "deny"`` and the management token ``ACL_TOKEN``.
- ``consul_wan``: two dev agents in datacenters dc1 and dc2, joined over the WAN.

The binary is ``$CONSUL_BIN`` or ``consul`` on PATH (``scripts/get-consul`` fetches one). Without it, tests that
need Consul are skipped on a developer's machine and **fail** when ``CI=true``.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from manifest_runner.testing.devagent import DevAgent, find_consul_binary

ACL_TOKEN = "3c1a6f6e-6d3f-4c1e-9a57-000000000001"


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


CONSUL_FIXTURES = frozenset({"consul_binary", "consul", "fresh_consul", "consul_acl", "consul_wan", "consul_env"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that uses an agent is marked ``consul``: ``-m "not consul"`` is then the quick suite."""
    for item in items:
        if CONSUL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.consul)


@pytest.fixture(scope="session")
def consul_binary() -> str:
    binary = find_consul_binary()
    if binary is None:
        message = "no consul binary: set CONSUL_BIN or put consul on PATH (scripts/get-consul fetches one)"
        if in_ci():
            pytest.fail(f"CI=true and {message}")
        pytest.skip(message)
    return binary


@pytest.fixture(scope="session")
def consul(consul_binary: str) -> Iterator[DevAgent]:
    with DevAgent(consul_binary) as agent:
        yield agent


@pytest.fixture
def fresh_consul(consul_binary: str) -> Iterator[DevAgent]:
    with DevAgent(consul_binary) as agent:
        yield agent


@pytest.fixture(scope="session")
def consul_acl(consul_binary: str) -> Iterator[DevAgent]:
    with DevAgent(consul_binary, management_token=ACL_TOKEN) as agent:
        yield agent


@pytest.fixture(scope="session")
def consul_wan(consul_binary: str) -> Iterator[tuple[DevAgent, DevAgent]]:
    with DevAgent(consul_binary, datacenter="dc1") as dc1, DevAgent(consul_binary, datacenter="dc2") as dc2:
        dc1.join_wan(dc2)
        yield dc1, dc2


@pytest.fixture
def unique() -> str:
    """A short suffix that keeps one test's services, keys and owners apart from every other test's."""
    return uuid.uuid4().hex[:8]


@pytest.fixture
def consul_env(consul: DevAgent, monkeypatch: pytest.MonkeyPatch) -> DevAgent:
    """The session agent, with CONSUL_HTTP_ADDR pointing at it and no other CONSUL_* variable set."""
    for name in list(os.environ):
        if name.startswith("CONSUL_") and name != "CONSUL_BIN":
            monkeypatch.delenv(name)
    monkeypatch.setenv("CONSUL_HTTP_ADDR", consul.http_addr)
    return consul


# -- the fault suite's bookkeeping: every injected fault is counted; the totals are printed at the end of the run,
# across xdist workers, through a log file named in CONSUL_MANIFEST_FAULTS_LOG (tests/faults/proxy.count).


def pytest_configure(config: pytest.Config) -> None:
    if "CONSUL_MANIFEST_FAULTS_LOG" not in os.environ:  # the controller; workers inherit it
        handle, name = tempfile.mkstemp(prefix="consul-manifest-faults-", suffix=".log")
        os.close(handle)
        os.environ["CONSUL_MANIFEST_FAULTS_LOG"] = name


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    path = Path(os.environ.get("CONSUL_MANIFEST_FAULTS_LOG", ""))
    if not path.is_file() or hasattr(terminalreporter.config, "workerinput"):
        return
    totals: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        kind, _, amount = line.rpartition(" ")
        if amount.isdigit():
            totals[kind] += int(amount)
    if totals:
        terminalreporter.section("faults injected")
        for kind, amount in sorted(totals.items()):
            terminalreporter.write_line(f"{kind:>28}: {amount}")
        terminalreporter.write_line(f"{'total':>28}: {sum(totals.values())}")
    path.unlink(missing_ok=True)
