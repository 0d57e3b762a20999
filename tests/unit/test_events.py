"""The runner's event merging: bursts of edits and drift are gathered; a dependency change ends the wait at once."""

from __future__ import annotations

import signal
import threading
import time

from manifest_runner.run import events as ev


def test_nothing_within_the_timeout_is_an_empty_batch() -> None:
    batch = ev.Events().next_batch(timeout=0.01, debounce=0.01)
    assert not batch.kinds and not batch.dependencies and not batch.signals


def test_edits_and_drift_are_gathered_within_the_debounce() -> None:
    events = ev.Events()
    events.put(ev.FILES)
    threading.Timer(0.02, lambda: events.put(ev.DRIFT)).start()
    batch = events.next_batch(timeout=1.0, debounce=0.3)
    assert batch.kinds == {ev.FILES, ev.DRIFT}


def test_a_dependency_change_ends_the_gathering_at_once() -> None:
    events = ev.Events()
    events.put(ev.DRIFT)
    threading.Timer(0.02, lambda: events.put(ev.DEPS, {"a::X"})).start()
    started = time.monotonic()
    batch = events.next_batch(timeout=1.0, debounce=30.0)
    assert batch.dependencies == {"a::X"} and batch.kinds == {ev.DRIFT}
    assert time.monotonic() - started < 29  # it did not wait out the debounce (a bound against a hang, not a timing)


def test_dependency_keys_and_signals_are_merged() -> None:
    events = ev.Events()
    events.put(ev.DEPS, {"a::X"})
    events.put(ev.DEPS, {"b::Y"})
    events.put(ev.SIGNAL, signal.SIGHUP)
    batch = events.next_batch(timeout=0.1, debounce=0.01)
    assert batch.dependencies == {"a::X", "b::Y"}
    assert batch.signals == [signal.SIGHUP]
