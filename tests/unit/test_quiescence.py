"""Quiescence (wait min/max, splay) as pure logic: a burst is acted on once, never later than max."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from manifest_runner.util.quiescence import Quiescence, parse_wait


def test_wait_forms() -> None:
    assert parse_wait("5s") == (5.0, 20.0)
    assert parse_wait("5s:10s") == (5.0, 10.0)
    assert parse_wait("0") == (0.0, 0.0)
    assert parse_wait("1.5") == (1.5, 6.0)
    assert parse_wait("500ms:2s") == (0.5, 2.0)
    for bad in ("10s:5s", "soon", "-1", "5s:later"):
        with pytest.raises(ValueError, match=r"shorter|not a duration|not a number"):
            parse_wait(bad)


def test_acts_after_min_of_quiet() -> None:
    quiet = Quiescence(2.0, 10.0)
    quiet.changed(100.0)
    quiet.changed(101.0)
    assert not quiet.due(102.5)
    assert quiet.due(103.0)
    assert quiet.deadline() is None  # acted on: nothing pending


def test_constant_churn_still_gets_through_at_max() -> None:
    quiet = Quiescence(2.0, 5.0)
    now = 100.0
    acted = []
    while now < 112:
        quiet.changed(now)  # a change every second: never 2 s of quiet
        if quiet.due(now):
            acted.append(now)
        now += 1.0
    assert acted == [105.0, 111.0]


def test_splay_is_drawn_once_per_burst() -> None:
    draws = iter([0.5, 0.1])
    quiet = Quiescence(1.0, 4.0, splay=10.0, uniform=lambda: next(draws))
    quiet.changed(0.0)
    quiet.changed(0.5)
    assert quiet.deadline() == pytest.approx(1.5 + 5.0)
    assert quiet.due(6.5)
    quiet.changed(20.0)
    assert quiet.deadline() == pytest.approx(21.0 + 1.0)


@given(st.lists(st.floats(0, 50), min_size=1, max_size=40), st.floats(0, 5), st.floats(0, 20))
def test_a_burst_is_one_action_no_later_than_max_after_its_first_change(
    gaps: list[float], low: float, high: float
) -> None:
    high = max(high, low)
    quiet = Quiescence(low, high)
    now, first, actions = 0.0, None, 0
    for gap in gaps:
        now += gap
        if quiet.due(now):
            actions += 1
            first = None
        quiet.changed(now)
        first = now if first is None else first
        deadline = quiet.deadline()
        assert deadline is not None and deadline <= first + high + 1e-9
    assert actions <= len(gaps)
