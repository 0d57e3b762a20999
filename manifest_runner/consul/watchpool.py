"""Many blocking queries over a bounded number of connections.

Consul refuses a client more than ``limits.http_max_conns_per_client`` connections (200 by default, counted per
client IP, so every process on a host shares it), and a blocking query holds its connection for as long as it
blocks. consul-template opens one per dependency and runs into the limit. Here every watch of one pool shares at
most ``connections`` of them:

- while there are no more watches than connections, each watch blocks for the long ``wait`` (5 minutes): a change
  is seen at once, an unrelated change costs nothing;
- with more watches than connections, the workers take the watches in turn, each blocking for a short wait sized so
  that every watch is back on a connection within ``latency`` seconds. A watch off a connection loses nothing: its
  next query carries its last index, and Consul answers at once when that index has moved. Only the time to see a
  change grows, bounded by ``latency``; the cost is one request per watch per ``latency`` seconds (answered by the
  agent's cache with ``?cached``).

When a watch is added past the number of connections, the workers blocked for the long wait are interrupted, so the
new watch never waits minutes for a turn. Each watch keeps Consul's index rules (:class:`.IndexRules`) and its own
backoff after errors.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from manifest_runner.consul.blocking import Fetch, IndexRules
from manifest_runner.consul.client import ConsulClient
from manifest_runner.errors import ConsulError
from manifest_runner.util.backoff import Backoff

log = logging.getLogger("consul_manifest.watch")

DEFAULT_CONNECTIONS = 48
"""Under a quarter of Consul's default per-client limit (200): the limit counts every process of the host (by client
address), so the rest is left to the process's ordinary requests (at most 8 connections) and to its neighbours."""


def connections_for(limit: int | None, wanted: int | None = None) -> int:
    """The pool size for an agent whose per-client limit is ``limit`` (0 or None: unlimited or unknown):
    ``wanted`` if given, else :data:`DEFAULT_CONNECTIONS`, and never more than a quarter of the limit."""
    size = wanted if wanted is not None else DEFAULT_CONNECTIONS
    if limit:
        size = min(size, max(1, limit // 4))
    return max(1, size)


@dataclass(eq=False)
class Watch:
    """One blocking query of a pool. ``stop()`` ends it; ``ready`` is set once its first read is done (or failed)."""

    name: str
    fetch: Fetch
    on_change: Callable[[Any], None]
    notify_first: bool = False
    rules: IndexRules = field(default_factory=IndexRules)
    backoff: Backoff = field(default_factory=lambda: Backoff(0.25, 30.0))
    ready: threading.Event = field(default_factory=threading.Event)
    wakeups: int = 0
    changes: int = 0
    last_call: float = 0.0
    stopped: bool = False
    pool: WatchPool | None = field(default=None, repr=False)

    def stop(self) -> None:
        if self.pool is not None:
            self.pool.remove(self)
        else:
            self.stopped = True


@dataclass(eq=False)
class _Worker:
    client: ConsulClient
    thread: threading.Thread | None = None
    current: Watch | None = None
    long_wait: bool = False
    interrupted: bool = False


class WatchPool:
    """Blocking queries for any number of watches over at most ``connections`` connections of their own."""

    def __init__(
        self,
        client: ConsulClient,
        *,
        connections: int = DEFAULT_CONNECTIONS,
        latency: float = 1.5,
        long_wait: str = "5m",
        min_wait: float = 0.25,
        min_interval: float = 0.005,
        on_error: Callable[[str, BaseException], None] = lambda name, err: None,
    ) -> None:
        self.client = client
        self.connections = max(1, connections)
        self.latency = latency
        self.long_wait = long_wait
        self.min_wait = min_wait
        self.min_interval = min_interval
        self.on_error = on_error
        self._cond = threading.Condition()
        self._due: list[tuple[float, int, Watch]] = []
        self._order = itertools.count()
        self._watches: set[Watch] = set()
        self._workers: list[_Worker] = []
        self._closed = False
        self.requests = 0

    # -- the caller's side ----------------------------------------------------------------------------------------

    def add(self, name: str, fetch: Fetch, on_change: Callable[[Any], None], *, notify_first: bool = False) -> Watch:
        watch = Watch(name, fetch, on_change, notify_first, pool=self)
        with self._cond:
            if self._closed:
                raise RuntimeError("the watch pool is stopped")
            self._watches.add(watch)
            self._queue(watch, 0.0)
            if len(self._workers) < min(self.connections, len(self._watches)):
                self._spawn()
            if len(self._watches) > self.connections:
                for worker in self._workers:
                    if worker.long_wait:
                        self._interrupt(worker)
            self._cond.notify()
        return watch

    def remove(self, watch: Watch) -> None:
        with self._cond:
            watch.stopped = True
            self._watches.discard(watch)
            for worker in self._workers:
                if worker.current is watch:
                    self._interrupt(worker)

    def wait_ready(self, watches: list[Watch] | None = None, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            targets = list(self._watches) if watches is None else watches
        return all(w.ready.wait(max(0.0, deadline - time.monotonic())) for w in targets)

    def stop(self) -> None:
        with self._cond:
            self._closed = True
            for watch in self._watches:
                watch.stopped = True
            self._watches.clear()
            self._due.clear()
            workers = list(self._workers)
            for worker in workers:
                worker.client.abort()
            self._cond.notify_all()
        for worker in workers:
            if worker.thread is not None and worker.thread is not threading.current_thread():
                worker.thread.join(timeout=5)

    @property
    def size(self) -> int:
        """Watches in the pool."""
        with self._cond:
            return len(self._watches)

    @property
    def connections_held(self) -> int:
        """Connections the pool's workers hold (one each): never more than ``connections``."""
        with self._cond:
            return len(self._workers)

    @property
    def wakeups(self) -> int:
        with self._cond:
            return sum(w.wakeups for w in self._watches)

    def wait_for_turn(self) -> str:
        """The ``wait`` of the next blocking query: long while every watch can have a connection, else short
        enough that each watch comes back within ``latency``."""
        watches = len(self._watches)
        if watches <= self.connections:
            return self.long_wait
        seconds = max(self.min_wait, self.latency * self.connections / watches)
        return f"{int(seconds * 1000)}ms"

    # -- the workers ------------------------------------------------------------------------------------------

    def _queue(self, watch: Watch, at: float) -> None:
        heapq.heappush(self._due, (at, next(self._order), watch))

    def _interrupt(self, worker: _Worker) -> None:
        worker.interrupted = True
        worker.client.abort()

    def _spawn(self) -> None:
        worker = _Worker(self.client.clone())
        worker.thread = threading.Thread(
            target=self._work, args=(worker,), name=f"watch pool {len(self._workers)}", daemon=True
        )
        self._workers.append(worker)
        worker.thread.start()

    def _next(self, worker: _Worker) -> tuple[Watch, str] | None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                while self._due and self._due[0][2].stopped:
                    heapq.heappop(self._due)
                if self._due and self._due[0][0] <= now:
                    _, _, watch = heapq.heappop(self._due)
                    wait = self.wait_for_turn()
                    worker.current, worker.long_wait = watch, wait == self.long_wait
                    return watch, wait
                self._cond.wait(self._due[0][0] - now if self._due else None)
            return None

    def _work(self, worker: _Worker) -> None:
        while (taken := self._next(worker)) is not None:
            watch, wait = taken
            pause = self.min_interval - (time.monotonic() - watch.last_call)
            if pause > 0:
                time.sleep(pause)
            watch.last_call = time.monotonic()
            try:
                index, body = watch.fetch(worker.client, watch.rules.query_index(), wait)
            except ConsulError as err:
                self._failed(worker, watch, err)
                continue
            except Exception as err:
                log.exception("watch %s: unexpected error", watch.name)
                self._failed(worker, watch, err)
                continue
            with self._cond:
                self.requests += 1
                if worker.interrupted:  # cut just after its answer came: the connection is refused from now on
                    worker.client = self.client.clone()
                worker.current, worker.long_wait, worker.interrupted = None, False, False
            watch.backoff.reset()
            watch.wakeups += 1
            if watch.rules.answered(index, watch.notify_first) and not watch.stopped:
                watch.changes += 1
                try:
                    watch.on_change(body)
                except Exception:  # the caller's callback: report it, keep watching
                    log.exception("watch %s: the change handler failed", watch.name)
            watch.ready.set()
            with self._cond:
                if not watch.stopped:
                    self._queue(watch, time.monotonic())
                    self._cond.notify()

    def _failed(self, worker: _Worker, watch: Watch, err: BaseException) -> None:
        with self._cond:
            self.requests += 1
            interrupted, worker.interrupted = worker.interrupted, False
            worker.current, worker.long_wait = None, False
            if self._closed:
                return
            if interrupted:  # cut on purpose (the pool grew, or this watch stopped): a fresh connection, no error
                worker.client = self.client.clone()
                if not watch.stopped:
                    self._queue(watch, time.monotonic())
                    self._cond.notify()
                return
        watch.ready.set()  # Consul is away: nobody should wait for this watch's first read
        if not watch.stopped:
            self.on_error(watch.name, err)
        watch.rules.failed()
        delay = watch.backoff.next()
        with self._cond:
            if not watch.stopped and not self._closed:
                self._queue(watch, time.monotonic() + delay)
                self._cond.notify()
