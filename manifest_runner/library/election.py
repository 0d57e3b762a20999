"""Leader election for ``ConsulRegistry``: leadership through a Consul lock, held while its session lives."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from manifest_runner.consul.lock import Lock
from manifest_runner.errors import ConsulError

log = logging.getLogger("consul_manifest.registry")


class Election:
    """Leadership through a lock: campaign until elected, call ``on_elected``, watch the session; on loss call
    ``on_lost`` and campaign again."""

    def __init__(
        self,
        make_lock: Callable[[], Lock],
        name: str,
        on_elected: Callable[[], None] | None,
        on_lost: Callable[[], None] | None,
    ) -> None:
        self.make_lock = make_lock
        self.name = name
        self.on_elected = on_elected
        self.on_lost = on_lost
        self.elected = threading.Event()
        self.attempts = 0
        """Acquisition attempts so far (each waits up to 5 s for the lock)."""
        self._stop = threading.Event()
        self._lock: Lock | None = None
        self._thread = threading.Thread(target=self._campaign, name=f"election {name}", daemon=True)

    @property
    def is_leader(self) -> bool:
        return self.elected.is_set() and self._lock is not None and self._lock.held

    def start(self) -> Election:
        self._thread.start()
        return self

    def _campaign(self) -> None:
        lock: Lock | None = None
        while not self._stop.is_set():
            if lock is None:  # one session per term of campaigning, renewed while it waits
                lock = self.make_lock()
            self.attempts += 1
            try:
                won = lock.acquire()
            except ConsulError as err:
                log.warning("election %s: %s", self.name, err)
                lock.release()
                lock = None
                self._stop.wait(1.0)
                continue
            if not won:
                continue
            self._lock = lock
            self.elected.set()
            if self.on_elected is not None:
                self.on_elected()
            while not self._stop.is_set() and not lock.lost.wait(0.2):
                pass
            self.elected.clear()
            lock.release()
            self._lock = lock = None
            if self.on_lost is not None and not self._stop.is_set():
                self.on_lost()
        if lock is not None:
            lock.release()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
