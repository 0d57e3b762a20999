"""The dependency watch: wakes the runner when a dependency may have changed, with a bounded number of loops.

One blocking loop per watched service while there are few (at most ``per_service``), otherwise two per datacenter
(``/v1/health/state/any`` and ``/v1/catalog/services``, each compared service by service, so that only the
dependencies on a service that changed are resolved again); and one per KV root. In that mode a new instance
without any check, of a service whose tags do not change, is seen at the next resync.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from manifest_runner.consul.blocking import (
    BlockingLoop,
    Fetch,
    catalog_fetch,
    checks_fetch,
    health_fetch,
    kv_keys_fetch,
    wait_ready,
)
from manifest_runner.consul.client import ConsulClient
from manifest_runner.consul.payloads import CheckState
from manifest_runner.converge.state import kv_roots
from manifest_runner.manifest.loader import ManifestSet
from manifest_runner.manifest.model import Dependency, KVDependency


def service_fingerprints(checks: Iterable[CheckState]) -> dict[str, str]:
    """Per service name, a digest of its instances' check states ("" : node-level checks, which touch all)."""
    states: dict[str, list[tuple[str, str, str, str]]] = defaultdict(list)
    for check in checks:
        states[check.service_name].append((check.node, check.service_id, check.check_id, check.status))
    return {
        name: hashlib.sha1(json.dumps(sorted(v)).encode(), usedforsecurity=False).hexdigest()
        for name, v in states.items()
    }


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
                loop(f"kv {root or '/'}@{place or 'local'}", kv_keys_fetch(root, place), _notifier(notify, under))

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
            current = {name: tuple(sorted(tags)) for name, tags in (body or {}).items()}
            with lock:
                changed = {name for name in set(current) | set(catalog) if current.get(name) != catalog.get(name)}
                catalog.clear()
                catalog.update(current)
            if not catalog_primed.is_set():
                catalog_primed.set()
                return
            notify({key for name in changed for key in wanted.get(name, ())})

        where = datacenter or "local"
        loop(f"health state@{where}", checks_fetch(datacenter), health_changed, True)
        loop(f"catalog services@{where}", catalog_fetch(datacenter), catalog_changed, True)

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
            item.interrupt()
        for item in self.loops:
            item.stop()

    @property
    def wakeups(self) -> int:
        return sum(item.wakeups for item in self.loops)


def dependency_keys(manifests: ManifestSet) -> dict[str, Dependency]:
    """Every dependency of the set under a key naming its manifest (``<file>::<name>``)."""
    return {f"{m.file}::{name}": dep for m in manifests.manifests for name, dep in m.manifest.dependencies.items()}


def split_key(key: str) -> tuple[Path, str]:
    """``<file>::<name>`` -> (file, name)."""
    file, _, name = key.rpartition("::")
    return Path(file), name
