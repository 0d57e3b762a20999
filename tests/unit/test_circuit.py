"""The library's circuit breaker as logic: open on the first failure, fail fast while open, probe in the background."""

from __future__ import annotations

import threading

import pytest

from manifest_runner.errors import ConsulUnavailable
from manifest_runner.library.circuit import Circuit


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def down() -> ConsulUnavailable:
    return ConsulUnavailable("no answer within 5s", operation="GET /v1/health/service/db")


def test_closed_lets_everything_through() -> None:
    circuit = Circuit()
    assert all(circuit.allow() for _ in range(10))


def test_open_fails_fast_until_the_probe_interval_then_lets_one_caller_probe() -> None:
    clock = Clock()
    circuit = Circuit(probe_interval=1.0, clock=clock)
    assert circuit.failed(down()) is True
    with pytest.raises(ConsulUnavailable, match="Consul is down"):
        circuit.check()
    clock.now += 1.5
    assert circuit.allow() is True  # one caller probes
    assert circuit.allow() is False  # the others do not wait on it
    assert circuit.succeeded() is True
    assert circuit.allow() is True


def test_a_background_probe_keeps_every_caller_fast() -> None:
    clock = Clock()
    probed = threading.Event()
    answers = [down()]

    def probe() -> None:
        probed.set()
        if answers:
            raise answers.pop()

    circuit = Circuit(probe_interval=1.0, clock=clock, probe=probe)
    circuit.failed(down())
    clock.now += 1.5
    assert circuit.allow() is False  # the probe runs in the background; the caller fails fast
    assert probed.wait(5)
    for _ in range(100):
        if not circuit.probing:
            break
        threading.Event().wait(0.01)
    assert circuit.is_open  # the probe found it still down
    clock.now += 1.5
    probed.clear()
    circuit.allow()
    assert probed.wait(5)
    for _ in range(100):
        if not circuit.is_open:
            break
        threading.Event().wait(0.01)
    assert not circuit.is_open and circuit.allow()
