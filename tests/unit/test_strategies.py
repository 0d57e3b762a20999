"""Strategies and formats, pure."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from manifest_runner.consul.payloads import Instance
from manifest_runner.manifest.formatting import format_problem
from manifest_runner.resolve.strategies import format_instance, pick


def inst(i: int, status: str = "passing", weights: tuple[int, int] = (1, 1)) -> Instance:
    return Instance(
        id=f"i{i}",
        service="s",
        address=f"10.0.0.{i}",
        port=1000 + i,
        status=status,  # type: ignore[arg-type]
        weights=weights,
    )


@given(
    st.lists(st.integers(0, 50), min_size=1, max_size=8, unique=True),
    st.integers(0, 10_000),
    st.sampled_from(["first", "random", "round_robin", "health_weighted", "least_connections"]),
    st.floats(0, 0.9999),
)
def test_pick_always_returns_one_of_the_instances(ids: list[int], position: int, strategy: str, u: float) -> None:
    pool = [inst(i) for i in ids]
    assert pick(strategy, pool, uniform=lambda: u, position=position) in pool


def test_round_robin_cycles_in_id_order() -> None:
    pool = [inst(3), inst(1), inst(2)]
    assert [pick("round_robin", pool, uniform=random.random, position=p).id for p in range(6)] == [
        "i1",
        "i2",
        "i3",
        "i1",
        "i2",
        "i3",
    ]


def test_least_connections_follows_in_flight_counts() -> None:
    pool = [inst(1), inst(2), inst(3)]
    assert pick("least_connections", pool, uniform=random.random, in_flight={"i1": 2, "i2": 0, "i3": 1}).id == "i2"
    assert pick("least_connections", pool, uniform=lambda: 0.0, in_flight={}).id == "i1"


def test_least_connections_breaks_ties_at_random() -> None:
    rng = random.Random(7)
    pool = [inst(1), inst(2), inst(3), inst(4)]
    busy = {"i4": 3}
    picks = Counter(pick("least_connections", pool, uniform=rng.random, in_flight=busy).id for _ in range(3000))
    assert set(picks) == {"i1", "i2", "i3"}  # never the busy one
    assert min(picks.values()) > 800  # and the idle ones share: about 1000 each


def test_health_weighted_is_proportional_to_weights_by_status() -> None:
    rng = random.Random(1)
    pool = [inst(1, weights=(1, 1)), inst(2, weights=(9, 1)), inst(3, status="warning", weights=(100, 0))]
    picks = Counter(pick("health_weighted", pool, uniform=rng.random).id for _ in range(10_000))
    assert picks["i3"] == 0
    assert abs(picks["i2"] / 10_000 - 0.9) < 0.02


def test_format_fields() -> None:
    instance = Instance(
        id="x", service="s", address="fe80::1", port=5, node="n", datacenter="dc2", tags=("a", "b"), meta=(("k", "v"),)
    )
    assert (
        format_instance("{host}:{port}/{meta[k]}{meta[missing]}-{tags}-{node}-{datacenter}-{id}-{service}", instance)
        == "[fe80::1]:5/v-a,b-n-dc2-x-s"
    )


@pytest.mark.parametrize("template", ["{meta}", "{nope}", "{port:04}", "{id!r}", "{", "{address.real}"])
def test_format_problems(template: str) -> None:
    assert format_problem(template) is not None
