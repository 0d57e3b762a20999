"""The dependency watch: wakes the runner when a dependency may have changed, exactly and cheaply.

One blocking query per watched service and datacenter (``/v1/health/service/<name>``), and one per KV root:
Consul moves such a query's index for any change to that service's instances (added or removed, with or without
checks; address, port, tags, meta, weights; any check's status) and for nothing else, so every change that can
alter an output wakes its dependencies, and a change to another service costs nothing. (A service that does not
exist yet is indexed with the whole catalog by Consul: its watch wakes on any registration, and the resolution
that follows finds the same nothing and writes nothing.) The periodic resync is a safety net, not the mechanism.

Cheap by construction:

- the query filters out every instance (``filter=Service.ID == ""``): Consul blocks and indexes as without a
  filter, and answers ``[]``. A wake-up costs a few hundred bytes; the resolution that follows reads what it needs;
- unless the manifest asks for reads from the leader (``reads.consistency: default``), the query is answered by
  the agent's cache (``?cached``): the agent keeps one blocking query per service to the servers, over its own
  multiplexed connection, shared by every process on the host, whatever the number of runners;
- the queries share a bounded :class:`~manifest_runner.consul.watchpool.WatchPool` (Consul limits connections per
  client): beyond its size, they take turns, every watch back on a connection within ``latency``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from manifest_runner.consul.base import LEADER, Freshness
from manifest_runner.consul.blocking import Fetch
from manifest_runner.consul.client import ConsulClient
from manifest_runner.consul.watchpool import Watch, WatchPool
from manifest_runner.converge.state import kv_roots
from manifest_runner.manifest.loader import ManifestSet
from manifest_runner.manifest.model import Dependency, KVDependency, Reads
from manifest_runner.resolve.envfrom import all_dependencies

NOTHING = 'Service.ID == ""'
"""A filter no instance matches: the answer is ``[]``, its index the service's."""


def service_fetch(service: str, datacenter: str | None, freshness: Freshness) -> Fetch:
    def fetch(client: ConsulClient, index: int | None, wait: str) -> tuple[int, Any]:
        return client.health_service(
            service, datacenter=datacenter, filter_expr=NOTHING, index=index, wait=wait, freshness=freshness
        )

    return fetch


def watch_freshness(reads: Reads) -> Freshness:
    """How a watch reads: from the agent's cache, unless the manifest wants the leader's answers."""
    return LEADER if reads.consistency == "default" else Freshness(cached=True)


def kv_fetch(prefix: str, datacenter: str | None, freshness: Freshness) -> Fetch:
    def fetch(client: ConsulClient, index: int | None, wait: str) -> tuple[int, Any]:
        return client.kv_keys(prefix, datacenter=datacenter, index=index, wait=wait, freshness=freshness)

    return fetch


@dataclass(frozen=True)
class CatalogWatch:
    """A watch of the catalog's service list (a template's ``services()``)."""

    datacenter: str | None = None


Watched = tuple[Dependency | CatalogWatch, Freshness]


def catalog_fetch(datacenter: str | None, freshness: Freshness) -> Fetch:
    def fetch(client: ConsulClient, index: int | None, wait: str) -> tuple[int, Any]:
        return client.catalog_services(datacenter=datacenter, index=index, wait=wait)

    return fetch


def _notifier(notify: Callable[[set[str]], None], keys: set[str]) -> Callable[[Any], None]:
    frozen = frozenset(keys)

    def on_change(_body: Any) -> None:
        notify(set(frozen))

    return on_change


class DependencyWatch:
    """Wakes ``notify(keys)`` when the dependencies in ``keys`` may have changed.

    ``dependencies`` maps a key (any string: the caller's way to name a dependency) to its definition and the
    freshness its manifest reads with.
    """

    def __init__(
        self,
        pool: WatchPool,
        dependencies: Mapping[str, Watched],
        notify: Callable[[set[str]], None],
        *,
        notify_first: bool = False,
    ) -> None:
        self.pool = pool
        self.notify = notify
        self.notify_first = notify_first
        """Report each watch's first answer too: for watches started after the read they guard."""
        self.watches: list[Watch] = []
        self.plan: list[tuple[str, Fetch, set[str]]] = []
        services: dict[tuple[str | None, str, Freshness], set[str]] = defaultdict(set)
        kv_by_place: dict[tuple[str | None, Freshness], dict[str, str]] = defaultdict(dict)
        catalogs: dict[str | None, set[str]] = defaultdict(set)
        for key, (dependency, freshness) in dependencies.items():
            if isinstance(dependency, CatalogWatch):
                catalogs[dependency.datacenter].add(key)
            elif isinstance(dependency, KVDependency):
                kv_by_place[(dependency.datacenter, freshness.for_kv())][key] = dependency.kv
            else:
                places: list[str | None] = [*dependency.datacenters] if dependency.datacenters else [None]
                for place in places:
                    services[(place, dependency.service, freshness)].add(key)
        for (place, service, freshness), keys in sorted(
            services.items(), key=lambda item: (item[0][0] or "", item[0][1])
        ):
            name = f"health {service}@{place or 'local'}"
            self.plan.append((name, service_fetch(service, place, freshness), keys))
        for (place, freshness), kv_keys in kv_by_place.items():
            for root in kv_roots(kv_keys.values()):
                under = {k for k, key in kv_keys.items() if key.startswith(root) or root.startswith(key)}
                self.plan.append((f"kv {root or '/'}@{place or 'local'}", kv_fetch(root, place, freshness), under))
        for place, keys in catalogs.items():
            self.plan.append((f"catalog services@{place or 'local'}", catalog_fetch(place, LEADER), keys))

    def start(self) -> DependencyWatch:
        self.watches = [
            self.pool.add(name, fetch, _notifier(self.notify, keys), notify_first=self.notify_first)
            for name, fetch, keys in self.plan
        ]
        return self

    def wait_ready(self, timeout: float = 5.0) -> bool:
        """Wait until every watch has its starting index: act on Consul's state only after this, and a change made
        meanwhile cannot slip between the read and the watch."""
        return self.pool.wait_ready(self.watches, timeout)

    def stop(self) -> None:
        for watch in self.watches:
            self.pool.remove(watch)
        self.watches = []

    @property
    def wakeups(self) -> int:
        return sum(w.wakeups for w in self.watches)


def dependency_keys(manifests: ManifestSet) -> dict[str, Watched]:
    """Every dependency of the set under a key naming its manifest (``<file>::<name>``), with its manifest's
    freshness."""
    return {
        f"{m.file}::{name}": (dep, watch_freshness(m.manifest.reads))
        for m in manifests.manifests
        for name, dep in all_dependencies(m.manifest).items()
    }


def split_key(key: str) -> tuple[Path, str]:
    """``<file>::<name>`` -> (file, name)."""
    file, _, name = key.rpartition("::")
    return Path(file), name
