"""An agent that refuses a client more than 20 connections, and 200 dependencies: run stays under the limit (no
HTTP 429), and its number of connections is bounded whatever the number of dependencies: the watch pool (a quarter
of the agent's limit: 5), ordinary requests (at most 8) and the drift watches (2 here)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from manifest_runner.testing.devagent import DevAgent
from tests.integration.helpers import register, write
from tests.integration.runproc import RunProcess, established_connections, wait_for

pytestmark = pytest.mark.consul


@pytest.fixture
def limited_consul(consul_binary: str) -> Iterator[DevAgent]:
    with DevAgent(consul_binary, extra_hcl=("limits { http_max_conns_per_client = 20 }",)) as agent:
        yield agent


def dependencies(count: int) -> str:
    lines = [f"  D{i}: {{service: svc{i}, fallback: 'none'}}" for i in range(count // 2)]
    lines += [f"  K{i}: {{kv: deps/k{i}, fallback: 'none'}}" for i in range(count - count // 2)]
    return "\n".join(lines)


def connections_with(agent: DevAgent, tmp_path: Path, count: int) -> int:
    folder = tmp_path / f"d{count}"
    folder.mkdir()
    path = write(
        folder,
        "m.yaml",
        f"version: 1\nowner: limits{count}\ndependencies:\n{dependencies(count)}\noutputs:\n  env_file: out.env\n",
    )
    with RunProcess(agent.http_addr, ["--no-cache", str(path)], folder) as run:
        wait_for((folder / "out.env").exists, what="first render")
        register(agent, {"ID": f"svc0-{count}", "Name": "svc0", "Port": 1})  # a change: every watch is awake
        wait_for(
            lambda: (
                f"svc0-{count}" in (folder / "out.env").read_text()
                or "D0=127.0.0.1:1" in (folder / "out.env").read_text()
            ),
            what="the change rendered",
        )
        samples = []
        for _ in range(10):  # sampled while every loop is blocking again
            samples.append(established_connections(run.pid, agent.ports.http))
            time.sleep(0.05)
        output = run.output()
        assert run.stop() == 0, output
    assert "429" not in output and "too many" not in output.lower(), output
    return max(samples)


def test_connections_stay_flat_and_under_the_limit(limited_consul: DevAgent, tmp_path: Path) -> None:
    few = connections_with(limited_consul, tmp_path, 10)
    many = connections_with(limited_consul, tmp_path, 200)
    print(f"open connections to the agent: {few} with 10 dependencies, {many} with 200")
    assert few <= 5 + 8 + 2, few
    assert many <= 5 + 8 + 2, many
