"""The blocking-query loop's index rules and backoff, driven by a scripted fetch (no network, no Consul)."""

from __future__ import annotations

import threading
from typing import Any

from manifest_runner.consul.blocking import BlockingLoop
from manifest_runner.errors import ConsulUnavailable
from manifest_runner.util.backoff import Backoff
from tests.unit.scripted import client_with, unreachable


def drive(script: list[Any], *, notify_first: bool = False) -> tuple[list[int | None], list[Any], list[str], Backoff]:
    """Run a loop over ``script`` (each item: (index, body), or an exception to raise); returns the index asked at
    each call, the bodies reported as changes, the errors reported, and the loop's backoff."""
    asked: list[int | None] = []
    changes: list[Any] = []
    errors: list[str] = []
    done = threading.Event()
    pace = Backoff(0.001, 0.004, uniform=lambda: 0.5)
    client, _ = client_with(unreachable)

    def fetch(_client: Any, index: int | None, _wait: str) -> tuple[int, Any]:
        asked.append(index)
        step = script[len(asked) - 1] if len(asked) <= len(script) else None
        if step is None or len(asked) == len(script):
            loop._stop.set()
        if isinstance(step, Exception):
            raise step
        return step if step is not None else (0, None)

    loop = BlockingLoop(
        "test",
        client,
        fetch,
        changes.append,
        lambda _n, err: errors.append(str(err)),
        backoff=pace,
        min_interval=0.0,
        notify_first=notify_first,
    )
    loop.run_with(client)
    done.set()
    return asked, changes, errors, pace


def test_the_first_read_is_plain_then_each_call_blocks_on_the_last_index() -> None:
    asked, changes, _, _ = drive([(5, "a"), (5, "a"), (7, "b"), (9, "c")])
    assert asked == [None, 5, 5, 7]
    assert changes == ["b", "c"]  # the first read only says where things stand; an unchanged index is no change


def test_notify_first_reports_the_first_read_too() -> None:
    _, changes, _, _ = drive([(5, "a"), (6, "b")], notify_first=True)
    assert changes == ["a", "b"]


def test_an_index_that_goes_backwards_is_a_change_and_resets() -> None:
    asked, changes, _, _ = drive([(50, "a"), (60, "b"), (3, "restarted"), (4, "next")])
    assert changes == ["b", "restarted", "next"]
    assert asked == [None, 50, 60, 3]


def test_an_index_of_zero_is_never_sent() -> None:
    asked, _, _, _ = drive([(0, "a"), (0, "a"), (1, "b")])
    assert asked == [None, 1, 1]


def test_errors_back_off_and_the_next_read_is_plain() -> None:
    down = ConsulUnavailable("no", operation="GET /v1/x")
    asked, changes, errors, pace = drive([(10, "a"), down, down, (3, "back"), (4, "more")])
    assert len(errors) == 2
    assert asked == [None, 10, None, None, 3]  # after an error: plain reads, which see an index that went backwards
    assert changes == ["back", "more"]
    assert pace.current == pace.start  # a success reset the backoff


def test_the_backoff_doubles_with_jitter_up_to_its_cap() -> None:
    values = iter([0.0, 0.99, 0.5, 0.5, 0.5, 0.5])
    pace = Backoff(1.0, 5.0, uniform=lambda: next(values))
    assert [round(pace.next(), 2) for _ in range(5)] == [0.5, 2.98, 4.0, 5.0, 5.0]
    pace.reset()
    assert pace.next() == 1.0
