"""Blocking-query loops that obey Consul's index rules.

Index rules (Consul's "blocking queries" documentation): the first call is a plain read that gives the index; each
next call blocks with ``index`` and ``wait`` (a return does not mean a change: compare the index); an index that
goes backwards (an agent restarted, a snapshot restored) resets the loop to a plain read, and that counts as a
change; an index is never 0 on a blocking call; and the loop is rate-limited, backing off (capped, jittered) on
errors.

A loop holds one connection while it blocks, and Consul refuses a client more than
``limits.http_max_conns_per_client`` of them: callers keep the number of loops bounded.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from manifest_runner.consul.client import ConsulClient
from manifest_runner.errors import ConsulError
from manifest_runner.util.backoff import Backoff

Fetch = Callable[[ConsulClient, int | None, str], tuple[int, Any]]


@dataclass
class BlockingLoop:
    """Runs one blocking query over and over in a thread, calling ``on_change(body)`` when its index moves.

    ``fetch(client, index, wait)`` does the request (index ``None``: a plain read). The loop owns a clone of the
    client, so :meth:`stop` can interrupt a query that would otherwise block for minutes.
    """

    name: str
    client: ConsulClient
    fetch: Fetch
    on_change: Callable[[Any], None]
    on_error: Callable[[str, BaseException], None] = lambda name, err: None
    wait: str = "5m"
    min_interval: float = 0.005
    backoff: Backoff = field(default_factory=lambda: Backoff(0.25, 30.0))
    notify_first: bool = False
    wakeups: int = 0
    ready: threading.Event = field(default_factory=threading.Event)
    """Set once the first read established the index (or failed): from then on, no change is missed."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _own: ConsulClient | None = None

    def start(self) -> BlockingLoop:
        self._own = self.client.clone()
        self._thread = threading.Thread(target=self._run, name=f"watch {self.name}", daemon=True)
        self._thread.start()
        return self

    def interrupt(self) -> None:
        """Ask the loop to stop and cut its connection; :meth:`stop` then waits for the thread."""
        self._stop.set()
        if self._own is not None:
            self._own.abort()

    def stop(self) -> None:
        self.interrupt()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        own = self._own
        if own is not None:
            self.run_with(own)

    def run_with(self, own: ConsulClient) -> None:
        """The loop itself, on ``own`` (public so that it can be driven directly, e.g. by a unit test)."""
        rules = IndexRules()
        last_call = 0.0
        while not self._stop.is_set():
            pause = self.min_interval - (time.monotonic() - last_call)
            if pause > 0 and self._stop.wait(pause):
                return
            last_call = time.monotonic()
            try:
                new_index, body = self.fetch(own, rules.query_index(), self.wait)
            except ConsulError as err:
                self.ready.set()  # Consul is away: nobody should wait for this loop's first read
                if self._stop.is_set():
                    return
                self.on_error(self.name, err)
                if self._stop.wait(self.backoff.next()):
                    return
                rules.failed()
                continue
            self.backoff.reset()
            self.wakeups += 1
            if rules.answered(new_index, self.notify_first):
                self.on_change(body)
            self.ready.set()


@dataclass
class IndexRules:
    """Consul's index rules for one blocking query, as a small state machine shared by every kind of loop."""

    index: int = 0
    first: bool = True
    recovering: bool = False
    report_first: bool = False

    def query_index(self) -> int | None:
        """The index to block on; ``None``: a plain read (the first one, and the first after an error: a restarted
        agent's index is lower than ours, and blocking with ours would wait the whole ``wait`` instead of seeing
        that it went backwards). Once known, an index is clamped to >= 1 (0 would return at once)."""
        return None if self.first or self.recovering else max(1, self.index)

    def failed(self) -> None:
        self.recovering = True
        if self.first:
            # the caller acted on a state read without this watch in place: report the first answer, which may
            # hold a change made meanwhile
            self.report_first = True

    def answered(self, new_index: int, notify_first: bool = False) -> bool:
        """Record an answer's index; whether its body is a change to report."""
        self.recovering = False
        if new_index < self.index:
            self.index = max(new_index, 1)  # went backwards (restart, snapshot restore): what was read is current
            return True
        changed = new_index != self.index
        self.index = new_index
        report = changed and (not self.first or notify_first or self.report_first)
        self.first = False
        return report


def kv_keys_fetch(prefix: str, datacenter: str | None) -> Fetch:
    def fetch(client: ConsulClient, index: int | None, wait: str) -> tuple[int, Any]:
        return client.kv_keys(prefix, datacenter=datacenter, index=index, wait=wait)

    return fetch


def node_services_fetch(node: str) -> Fetch:
    def fetch(client: ConsulClient, index: int | None, wait: str) -> tuple[int, Any]:
        return client.node_services(node, index=index, wait=wait)

    return fetch


def wait_ready(loops: Iterable[BlockingLoop], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    return all(loop.ready.wait(max(0.0, deadline - time.monotonic())) for loop in loops)
