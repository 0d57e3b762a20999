"""Whatever answers in Consul's place, and however badly: a clear one-line error with a documented exit code, a
fallback where the command has one, never a traceback, never a claim that something was written."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from manifest_runner.testing.devagent import DevAgent
from tests.faults.proxy import FaultProxy, fault_proxy
from tests.integration.helpers import run_process, services, write

pytestmark = pytest.mark.consul


@pytest.fixture
def proxy(consul: DevAgent) -> Iterator[FaultProxy]:
    with fault_proxy(consul.ports.http) as running:
        yield running


def manifest(folder: Path, owner: str) -> Path:
    return write(
        folder,
        "m.yaml",
        f"""
        version: 1
        owner: {owner}
        services:
          - name: {owner}-api
            id: {owner}-api
            port: 8080
        kv:
          prefix: {owner}/
          enforce: {{a: 1}}
        dependencies:
          DB: {{service: {owner}-db, fallback: "localhost:5432"}}
        """,
    )


def no_traceback(result: object) -> str:
    text = result.stdout + result.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in text, text
    return text


ANSWERS = {
    "drop": 4,
    "reset": 4,
    "truncate": 4,
    "empty200": 4,
    "nonjson200": 4,
    "redirect": 4,
    "error500": 1,
}


@pytest.mark.parametrize("kind", sorted(ANSWERS))
def test_plan_and_apply_through_a_broken_answer(proxy: FaultProxy, tmp_path: Path, unique: str, kind: str) -> None:
    path = manifest(tmp_path, f"ha-{unique}")
    proxy.inject(kind)
    for command in ("plan", "apply"):
        result = run_process(proxy.address, command, "--timeout", "3", str(path))
        text = no_traceback(result)
        assert result.returncode == ANSWERS[kind], text
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1, text
        assert "/v1/" in errors[0], text  # the operation is named
        assert "created" not in result.stdout


@pytest.mark.parametrize("kind", ["blackhole", "drip"])
def test_a_silent_or_dripping_server_is_bounded_by_the_timeout(
    proxy: FaultProxy, tmp_path: Path, unique: str, kind: str
) -> None:
    path = manifest(tmp_path, f"slow-{unique}")
    proxy.inject(kind, seconds=1.0 if kind == "drip" else 600)
    result = run_process(proxy.address, "plan", "--timeout", "2", str(path), timeout=60)  # a hang guard, not a timing
    assert result.returncode == 4, no_traceback(result)
    assert "within 2s" in result.stderr
    rendered = run_process(proxy.address, "render", "--timeout", "2", "--no-cache", "-o", "-", str(path), timeout=60)
    assert rendered.returncode == 0, no_traceback(rendered)
    assert "DB=localhost:5432" in rendered.stdout


@pytest.mark.parametrize("kind", sorted(ANSWERS))
def test_render_falls_back_whatever_answers(proxy: FaultProxy, tmp_path: Path, unique: str, kind: str) -> None:
    path = manifest(tmp_path, f"hr-{unique}")
    proxy.inject(kind)
    result = run_process(proxy.address, "render", "--no-cache", "--format", "json", "-o", "-", str(path))
    assert result.returncode == 0, no_traceback(result)
    document = json.loads(result.stdout)
    assert document["dependencies"]["DB"]["source"] == "fallback"
    assert "warning: DB:" in result.stderr


def test_an_empty_200_to_a_transaction_is_never_reported_as_written(
    proxy: FaultProxy, consul: DevAgent, tmp_path: Path, unique: str
) -> None:
    owner = f"e200-{unique}"
    path = manifest(tmp_path, owner)
    proxy.inject("empty200", method="PUT", path="/v1/txn")
    result = run_process(proxy.address, "apply", str(path))
    text = no_traceback(result)
    assert result.returncode == 4, text
    assert "created" not in result.stdout
    assert f"{owner}-api" not in services(consul)  # KV failed first: nothing else was attempted


def test_a_dropped_write_is_not_sent_twice(proxy: FaultProxy, tmp_path: Path, unique: str) -> None:
    """A session-create whose connection breaks is not replayed (it may have landed); the next apply recovers."""
    path = manifest(tmp_path, f"once-{unique}")
    proxy.inject("drop", method="PUT", path="/v1/session/create", times=1)
    first = run_process(proxy.address, "apply", str(path))
    assert first.returncode == 4, no_traceback(first)
    assert proxy.requests.count(("PUT", "/v1/session/create")) == 1
    second = run_process(proxy.address, "apply", str(path))
    assert second.returncode == 0, no_traceback(second)
