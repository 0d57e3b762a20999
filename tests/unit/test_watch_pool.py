"""The watch pool's own logic at the transport seam: bounded connections, the rotation when watches outnumber them,
interrupting long waits, removal, errors. A small fake of blocking indexes stands in for the agent here; Consul's
real index behaviour is tested against real agents (tests/integration/test_dependency_watch.py)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from email.message import Message
from typing import Any

from manifest_runner.config import ConsulConfig
from manifest_runner.consul.client import ConsulClient
from manifest_runner.consul.transport import Answer, TransportError
from manifest_runner.consul.watchpool import WatchPool, connections_for
from manifest_runner.util.durations import parse_duration


@dataclass
class Indexes:
    """Per service, an index that moves on ``change``; blocking requests wait for it."""

    values: dict[str, int] = field(default_factory=dict)
    cond: threading.Condition = field(default_factory=threading.Condition)
    in_flight: int = 0
    peak: int = 0
    waits: list[str] = field(default_factory=list)
    failing: set[str] = field(default_factory=set)

    def change(self, name: str) -> None:
        with self.cond:
            self.values[name] = self.values.get(name, 1) + 1
            self.cond.notify_all()


@dataclass
class FakeTransport:
    indexes: Indexes
    aborted: bool = False

    def request(self, method: str, path: str, params: Any = None, body: Any = None, **_: Any) -> Answer:
        name = path.rsplit("/", 1)[-1]
        query = dict(params or [])
        book = self.indexes
        with book.cond:
            if self.aborted:
                raise TransportError("connect", "the transport was closed")
            if name in book.failing:
                raise TransportError("connect", "Connection refused")
            book.in_flight += 1
            book.peak = max(book.peak, book.in_flight)
            try:
                if "index" in query:
                    book.waits.append(str(query["wait"]))
                    limit = parse_duration(str(query["wait"]))
                    book.cond.wait_for(
                        lambda: self.aborted or book.values.get(name, 1) > int(query["index"]), timeout=limit
                    )
                if self.aborted:
                    raise TransportError("connect", "the transport was closed")
                index = book.values.get(name, 1)
            finally:
                book.in_flight -= 1
        headers = Message()
        headers["X-Consul-Index"] = str(index)
        return Answer(200, headers, b"[]", "OK", 10)

    def twin(self, *, max_idle: int = 1) -> FakeTransport:
        return FakeTransport(self.indexes)

    def close(self) -> None:
        return

    def abort(self) -> None:
        with self.indexes.cond:
            self.aborted = True
            self.indexes.cond.notify_all()


def fetch_for(name: str) -> Any:
    def fetch(client: ConsulClient, index: int | None, wait: str) -> tuple[int, Any]:
        return client.health_service(name, index=index, wait=wait)

    return fetch


def pool_of(connections: int, **options: Any) -> tuple[WatchPool, Indexes]:
    indexes = Indexes()
    client = ConsulClient(ConsulConfig.from_sources({"http_addr": "127.0.0.1:1"}, {}), transport=FakeTransport(indexes))
    return WatchPool(client, connections=connections, **options), indexes


def watch_all(pool: WatchPool, names: list[str]) -> dict[str, threading.Event]:
    seen = {name: threading.Event() for name in names}
    for name in names:
        pool.add(name, fetch_for(name), lambda _body, n=name: seen[n].set())
    assert pool.wait_ready(timeout=10)
    return seen


def test_while_watches_fit_each_blocks_long_and_only_the_changed_one_wakes() -> None:
    pool, indexes = pool_of(8)
    try:
        seen = watch_all(pool, [f"s{i}" for i in range(5)])
        indexes.change("s3")
        assert seen["s3"].wait(10)
        assert not any(seen[f"s{i}"].is_set() for i in (0, 1, 2, 4))
        assert set(indexes.waits) == {"5m"}
        assert pool.connections_held == 5
    finally:
        pool.stop()


def test_more_watches_than_connections_share_them_and_miss_no_change() -> None:
    pool, indexes = pool_of(4, latency=0.2, min_wait=0.05)
    names = [f"s{i}" for i in range(30)]
    try:
        seen = watch_all(pool, names)
        for name in names:
            indexes.change(name)
        for name in names:
            assert seen[name].wait(10), name
        assert indexes.peak <= 4
        assert pool.connections_held == 4
        assert "5m" not in indexes.waits[-10:]
    finally:
        pool.stop()


def test_a_watch_added_past_the_connections_does_not_wait_for_a_long_query() -> None:
    pool, _ = pool_of(3)
    try:
        watch_all(pool, ["a", "b", "c"])  # three long (5 minute) queries in flight
        late = pool.add("d", fetch_for("d"), lambda _b: None)
        assert late.ready.wait(10)  # without the interruption: 5 minutes
    finally:
        pool.stop()


def test_a_removed_watch_is_not_asked_again() -> None:
    pool, _ = pool_of(2, latency=0.1, min_wait=0.02)
    try:
        watch_all(pool, ["a", "b", "c"])
        [gone] = [w for w in pool._watches if w.name == "b"]
        pool.remove(gone)
        before = gone.wakeups
        threading.Event().wait(0.3)
        assert gone.wakeups <= before + 1  # at most the query that was in flight
        assert pool.size == 2
    finally:
        pool.stop()


def test_errors_are_reported_and_the_watch_recovers() -> None:
    errors: list[str] = []
    pool, indexes = pool_of(2, on_error=lambda name, err: errors.append(name))
    indexes.failing.add("x")
    try:
        seen = threading.Event()
        pool.add("x", fetch_for("x"), lambda _b: seen.set())
        pool.wait_ready(timeout=10)
        assert errors == ["x"]
        indexes.failing.clear()
        indexes.change("x")
        assert seen.wait(10)  # the backoff (0.25 s first) passes, a plain read, then the change
    finally:
        pool.stop()


def test_the_pool_stays_well_under_the_agents_limit() -> None:
    assert connections_for(200) == 48
    assert connections_for(100) == 25
    assert connections_for(20) == 5
    assert connections_for(0) == 48  # no limit
    assert connections_for(200, wanted=500) == 50
    assert connections_for(3) == 1
