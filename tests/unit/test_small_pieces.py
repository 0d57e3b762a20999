"""Durations, interpolation and problem formatting."""

from __future__ import annotations

import pytest

from manifest_runner.errors import ManifestError, Problem
from manifest_runner.manifest.interpolate import InterpolationError, interpolate
from manifest_runner.util.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("10s", 10), ("1m30s", 90), ("500ms", 0.5), ("1h", 3600), ("2h45m", 9900), ("1.5s", 1.5), ("90s", 90)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "10", "s", "10 s", "10sec", "-5s", "1d", "ten seconds"])
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration|unit"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"), [(90, "1m30s"), (0.25, "250ms"), (3600, "1h0m0s"), (10, "10s"), (0, "0s")]
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


def test_interpolate() -> None:
    env = {"A": "x", "EMPTY": ""}
    assert interpolate("${A}-${B:-y}-${EMPTY:-z}-$${A}-$A", env) == "x-y-z-${A}-$A"
    with pytest.raises(InterpolationError, match="B is not set"):
        interpolate("${B}", env)
    with pytest.raises(InterpolationError, match="unterminated"):
        interpolate("${A", env)


def test_problems_print_like_a_compiler_and_sort_by_place() -> None:
    problems = [Problem("b.yaml", 1, 1, "x", "m"), Problem("a.yaml", 3, 2, "services[0].port", "too big")]
    err = ManifestError(problems)
    assert [str(p) for p in err.problems] == ["a.yaml:3:2: services[0].port: too big", "b.yaml:1:1: x: m"]
    assert str(Problem("dir", 0, 0, "", "no such file or folder")) == "dir: no such file or folder"
