"""A cancellation token: set once (by a signal handler, say), waited on, and able to cut what blocks.

``on_cancel(callback)`` registers something to run when the token is set (closing the connection of a blocking
request, for instance), so that a wait that would last a minute ends at once. Callbacks run in the thread that sets
the token; a signal handler may set it (the lock is re-entrant).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator


class Cancelled(Exception):
    """The operation stopped because its cancellation token was set (a shutdown began)."""


class Cancel:
    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.RLock()
        self._callbacks: dict[int, Callable[[], None]] = {}
        self._next = 0

    def set(self) -> None:
        with self._lock:
            if self._event.is_set():
                return
            self._event.set()
            callbacks = list(self._callbacks.values())
        for callback in callbacks:
            with contextlib.suppress(Exception):
                callback()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled("stopping")

    @contextlib.contextmanager
    def on_cancel(self, callback: Callable[[], None]) -> Iterator[None]:
        """While the block runs, ``callback`` runs if the token is set (at once if it already is)."""
        with self._lock:
            self._next += 1
            key = self._next
            self._callbacks[key] = callback
            already = self._event.is_set()
        if already:
            callback()
        try:
            yield
        finally:
            with self._lock:
                self._callbacks.pop(key, None)
