"""The runner's one event queue: watches, timers and signals put events in; the loop takes them in batches.

Edits and drift come in bursts (an editor's save, our own writes echoed back by the watches), so they are gathered
for a short ``debounce``. A dependency change is acted on at once, because its latency is the product: it ends the
gathering as soon as it arrives.
"""

from __future__ import annotations

import queue
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

FILES = "files"
DRIFT = "drift"
DEPS = "deps"
SIGNAL = "signal"
RELOAD = "reload"


@dataclass
class Batch:
    """What happened since the last batch."""

    kinds: set[str] = field(default_factory=set)
    """``files`` (a manifest may have changed), ``drift`` (Consul may have drifted), ``reload`` (SIGHUP)."""
    dependencies: set[str] = field(default_factory=set)
    """Keys of the dependencies that may have changed."""
    signals: list[int] = field(default_factory=list)


class Events:
    """A thread-safe queue of ``(kind, payload)`` events, read in batches by one loop."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._clock = clock

    def put(self, kind: str, payload: Any = None) -> None:
        self._queue.put((kind, payload))

    def catch_signals(self, signals: Iterable[int], on_stop: Callable[[], None] | None = None) -> None:
        """Turn signals into events. SIGTERM and SIGINT also call ``on_stop`` at once (setting a cancellation
        token), so that a wait in progress in the loop itself ends now rather than when it would have."""

        def handler(number: int, _frame: object) -> None:
            if on_stop is not None and number in (signal.SIGTERM, signal.SIGINT):
                on_stop()
            self.put(SIGNAL, number)

        for signum in signals:
            signal.signal(signum, handler)

    def next_batch(self, timeout: float, debounce: float) -> Batch:
        """Wait up to ``timeout`` for an event, then take what else arrives within ``debounce`` (unless a
        dependency change arrives: then at once)."""
        batch = Batch()
        try:
            items = [self._queue.get(timeout=max(0.0, timeout))]
        except queue.Empty:
            return batch
        items.extend(self._drain())
        kinds = {kind for kind, _ in items}
        if kinds & {FILES, DRIFT} and DEPS not in kinds:
            end = self._clock() + debounce
            while True:
                try:
                    item = self._queue.get(timeout=max(0.0, end - self._clock()))
                except queue.Empty:
                    break
                items.append(item)
                if item[0] == DEPS:
                    break
        for kind, payload in items:
            if kind == DEPS:
                batch.dependencies |= set(payload)
            elif kind == SIGNAL:
                batch.signals.append(int(payload))
            else:
                batch.kinds.add(kind)
        return batch

    def _drain(self) -> list[tuple[str, Any]]:
        items = []
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                return items
