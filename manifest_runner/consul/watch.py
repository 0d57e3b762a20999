"""Blocking-query loops that obey Consul's index rules, and the watches built from them.

Index rules (Consul's "blocking queries" documentation): the first call is a plain read that gives the index; each
next call blocks with ``index`` and ``wait`` (a return does not mean a change: compare the index); an index that
goes backwards (an agent restarted, a snapshot restored) resets the loop to a plain read, and that counts as a
change; an index is never 0 on a blocking call; and the loop is rate-limited, backing off (capped, jittered) on
errors.

A watch holds one connection while it blocks, and Consul refuses a client more than
``limits.http_max_conns_per_client`` of them. :class:`DependencyWatch` therefore keeps the number of loops bounded
whatever the number of dependencies: one per watched service while there are few (at most ``per_service``),
otherwise two per datacenter (``/v1/health/state/any`` and ``/v1/catalog/services``, each compared service by
service, so that only the dependencies on a service that changed are resolved again); and one per KV root. In that
mode a new instance without any check, of a service whose tags do not change, is seen at the next resync.
"""

from __future__ import annotations

import hashlib
import json
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from manifest_runner.consul.client import ConsulClient
from manifest_runner.errors import ConsulError
from manifest_runner.schema import Dependency, KVDependency
from manifest_runner.state import kv_roots

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
    backoff_start: float = 0.25
    backoff_cap: float = 30.0
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

    def stop(self) -> None:
        self._stop.set()
        if self._own is not None:
            self._own.abort()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        own = self._own
        if own is None:
            return
        index = 0
        first = True
        delay = self.backoff_start
        last_call = 0.0
        recovering = False
        while not self._stop.is_set():
            pause = self.min_interval - (time.monotonic() - last_call)
            if pause > 0 and self._stop.wait(pause):
                return
            last_call = time.monotonic()
            try:
                blocking = index and not recovering
                new_index, body = self.fetch(own, max(1, index) if blocking else None, self.wait)
            except ConsulError as err:
                self.ready.set()  # Consul is away: nobody should wait for this loop's first read
                if self._stop.is_set():
                    return
                self.on_error(self.name, err)
                if self._stop.wait(delay * (0.5 + random.random())):  # noqa: S311 - jitter, not cryptography
                    return
                delay = min(delay * 2, self.backoff_cap)
                recovering = True
                continue
            # After an error the query was a plain read: a restarted agent's index is lower than ours, and blocking
            # with ours would wait the whole `wait` instead of seeing that it went backwards.
            recovering = False
            delay = self.backoff_start
            self.wakeups += 1
            if new_index < index:
                index = max(new_index, 1)  # went backwards (restart, snapshot restore): what was just read is current
                self.on_change(body)
                continue
            changed = new_index != index
            index = new_index
            if changed and (not first or self.notify_first):
                self.on_change(body)
            first = False
            self.ready.set()


def health_fetch(service: str, datacenter: str | None) -> Fetch:
    def fetch(client: ConsulClient, index: int | None, wait: str) -> tuple[int, Any]:
        return client.health_service(service, datacenter=datacenter, index=index, wait=wait)

    return fetch


def kv_fetch(prefix: str, datacenter: str | None) -> Fetch:
    def fetch(client: ConsulClient, index: int | None, wait: str) -> tuple[int, Any]:
        return client.kv_get(prefix, recurse=True, keys_only=True, datacenter=datacenter, index=index, wait=wait)

    return fetch


def path_fetch(path: str, datacenter: str | None = None) -> Fetch:
    def fetch(client: ConsulClient, index: int | None, wait: str) -> tuple[int, Any]:
        params: list[tuple[str, Any]] = [("dc", datacenter)] if datacenter else []
        if index is not None:
            params += [("index", index), ("wait", wait)]
        _, headers, body = client.call("GET", path, params)
        return int(headers.get("X-Consul-Index", "0") or 0), body

    return fetch


def service_fingerprints(checks: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Per service name, a digest of its instances' check states ("" : node-level checks, which touch all)."""
    states: dict[str, list[tuple[str, str, str, str]]] = defaultdict(list)
    for check in checks:
        states[str(check.get("ServiceName", ""))].append(
            (
                str(check.get("Node", "")),
                str(check.get("ServiceID", "")),
                str(check.get("CheckID", "")),
                str(check.get("Status", "")),
            )
        )
    return {
        name: hashlib.sha1(json.dumps(sorted(v)).encode(), usedforsecurity=False).hexdigest()
        for name, v in states.items()
    }


def wait_ready(loops: Iterable[BlockingLoop], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    return all(loop.ready.wait(max(0.0, deadline - time.monotonic())) for loop in loops)


def _notifier(notify: Callable[[set[str]], None], keys: set[str]) -> Callable[[Any], None]:
    frozen = frozenset(keys)

    def on_change(_body: Any) -> None:
        notify(set(frozen))

    return on_change


class DependencyWatch:
    """Wakes ``notify(names)`` when the dependencies in ``names`` may have changed, with a bounded number of loops.

    ``dependencies`` maps a key (any string: the caller's way to name a dependency) to its definition.
    """

    def __init__(
        self,
        client: ConsulClient,
        dependencies: Mapping[str, Dependency],
        notify: Callable[[set[str]], None],
        *,
        on_error: Callable[[str, BaseException], None] = lambda name, err: None,
        per_service: int = 8,
        wait: str = "5m",
    ) -> None:
        self.loops: list[BlockingLoop] = []
        services: dict[tuple[str | None, str], set[str]] = defaultdict(set)
        kv_by_dc: dict[str | None, dict[str, str]] = defaultdict(dict)
        for key, dependency in dependencies.items():
            if isinstance(dependency, KVDependency):
                kv_by_dc[dependency.datacenter][key] = dependency.kv
            else:
                places: list[str | None] = [*dependency.datacenters] if dependency.datacenters else [None]
                for place in places:
                    services[(place, dependency.service)].add(key)

        def loop(name: str, fetch: Fetch, on_change: Callable[[Any], None], first: bool = False) -> None:
            self.loops.append(BlockingLoop(name, client, fetch, on_change, on_error, wait=wait, notify_first=first))

        if len(services) <= per_service:
            for (place, service), keys in services.items():
                loop(f"health {service}@{place or 'local'}", health_fetch(service, place), _notifier(notify, keys))
        else:
            by_dc: dict[str | None, dict[str, set[str]]] = defaultdict(dict)
            for (place, service), keys in services.items():
                by_dc[place][service] = keys
            for place, wanted in by_dc.items():
                self._aggregate(place, wanted, notify, loop)
        for place, kv_keys in kv_by_dc.items():
            for root in kv_roots(kv_keys.values()):
                under = {k for k, key in kv_keys.items() if key.startswith(root) or root.startswith(key)}
                loop(f"kv {root or '/'}@{place or 'local'}", kv_fetch(root, place), _notifier(notify, under))

    @staticmethod
    def _aggregate(
        datacenter: str | None,
        wanted: dict[str, set[str]],
        notify: Callable[[set[str]], None],
        loop: Callable[..., None],
    ) -> None:
        every = {key for keys in wanted.values() for key in keys}
        seen: dict[str, str] = {}
        primed = threading.Event()
        lock = threading.Lock()

        def health_changed(body: Any) -> None:
            fingerprints = service_fingerprints(body or [])
            with lock:
                changed = {name for name in set(fingerprints) | set(seen) if fingerprints.get(name) != seen.get(name)}
                seen.clear()
                seen.update(fingerprints)
            if not primed.is_set():
                primed.set()  # the first read only says where things stand
                return
            if "" in changed:
                notify(set(every))
            else:
                notify({key for name in changed for key in wanted.get(name, ())})

        catalog: dict[str, tuple[str, ...]] = {}
        catalog_primed = threading.Event()

        def catalog_changed(body: Any) -> None:
            current = {str(name): tuple(sorted(tags or [])) for name, tags in (body or {}).items()}
            with lock:
                changed = {name for name in set(current) | set(catalog) if current.get(name) != catalog.get(name)}
                catalog.clear()
                catalog.update(current)
            if not catalog_primed.is_set():
                catalog_primed.set()
                return
            notify({key for name in changed for key in wanted.get(name, ())})

        where = datacenter or "local"
        loop(f"health state@{where}", path_fetch("/v1/health/state/any", datacenter), health_changed, True)
        loop(f"catalog services@{where}", path_fetch("/v1/catalog/services", datacenter), catalog_changed, True)

    def start(self) -> DependencyWatch:
        for item in self.loops:
            item.start()
        return self

    def wait_ready(self, timeout: float = 5.0) -> bool:
        """Wait until every loop has its starting index: act on Consul's state only after this, and a change made
        meanwhile cannot slip between the read and the watch."""
        return wait_ready(self.loops, timeout)

    def stop(self) -> None:
        for item in self.loops:
            item._stop.set()
            if item._own is not None:
                item._own.abort()
        for item in self.loops:
            item.stop()

    @property
    def wakeups(self) -> int:
        return sum(item.wakeups for item in self.loops)
