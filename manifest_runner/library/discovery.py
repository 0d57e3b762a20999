"""Discovery for the library: healthy instances, a cache kept current by watches, in-flight counts, and finding
the agent. Used by :class:`~manifest_runner.library.registry.ConsulRegistry`; built on the runner's adapter,
strategies and watch loops.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from manifest_runner.config import ConsulConfig, Endpoint
from manifest_runner.consul.client import ConsulClient
from manifest_runner.consul.payloads import Instance
from manifest_runner.consul.watchpool import Watch, WatchPool, connections_for
from manifest_runner.errors import AgentUnreachable, ConsulError, ConsulUnavailable
from manifest_runner.library.circuit import Circuit

log = logging.getLogger("consul_manifest.registry")

LOCAL_AGENT = "127.0.0.1:8500"

CacheKey = tuple[str, str | None, str | None, bool]


def find_agent(candidates: Sequence[str], timeout: float = 1.0) -> str | None:
    """The first address in ``candidates`` where a Consul agent answers ``/v1/status/leader``."""
    for address in candidates:
        try:
            settings = ConsulConfig.from_sources({"http_addr": address, "timeout": timeout})
            with ConsulClient(settings) as client:
                client.leader()
        except ConsulError:
            continue
        except Exception as err:  # noqa: BLE001 - a malformed candidate must not stop the search
            log.debug("agent candidate %s: %s", address, err)
            continue
        return address
    return None


def registry_settings(
    host: str | None, port: int | None, candidates: Sequence[str], datacenter: str | None, token: str | None
) -> ConsulConfig:
    """Where a ConsulRegistry's agent is: ``consul_host``/``consul_port`` when given, else ``CONSUL_HTTP_ADDR`` (no
    probing, as Consul's own clients do), else the first of the local agent and ``candidates`` that answers."""
    flags: dict[str, Any] = {"datacenter": datacenter, "token": token}
    if host is not None or port is not None:
        flags["http_addr"] = f"{host or '127.0.0.1'}:{port or 8500}"
        return ConsulConfig.from_sources(flags)
    from_env = ConsulConfig.from_sources(flags)
    if from_env.http_addr != ConsulConfig.model_fields["http_addr"].default:
        return from_env
    flags["http_addr"] = find_agent([LOCAL_AGENT, *candidates]) or LOCAL_AGENT
    return ConsulConfig.from_sources(flags)


def routable_address(endpoint: Endpoint) -> str:
    """The address other hosts reach this one by, as the kernel would route to the agent; "" for a local agent,
    which makes Consul use the node's own (advertised) address for the service."""
    if endpoint.scheme == "unix" or endpoint.host in ("127.0.0.1", "localhost", "::1"):
        return ""
    family = socket.AF_INET6 if ":" in endpoint.host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((endpoint.host, endpoint.port))  # UDP connect: a routing decision, no packet is sent
            return str(probe.getsockname()[0])
    except OSError:
        return ""


def instance_dict(instance: Instance) -> dict[str, Any]:
    """The shape discover_service returns: the seed's keys (id, address, port, tags), ``name``, and more."""
    return {**instance.to_json(), "name": instance.service}


def healthy(instances: list[Instance], passing_only: bool) -> list[Instance]:
    if passing_only:
        return [i for i in instances if i.status == "passing"]
    return instances


@dataclass
class ServiceWatch:
    """A live watch of one service: keeps the cache current and calls back on every change. ``stop()`` ends it."""

    key: CacheKey
    watch: Watch
    stopped: threading.Event = field(default_factory=threading.Event)

    def stop(self) -> None:
        self.stopped.set()
        self.watch.stop()

    @property
    def active(self) -> bool:
        return not self.stopped.is_set()


class Discovery:
    """Healthy instances of services, from Consul or from a cache that live watches keep current.

    Every watch shares one :class:`~manifest_runner.consul.watchpool.WatchPool` (at most a quarter of the agent's
    per-client connection limit), so hundreds of ``watch_service`` calls never starve ordinary lookups, which go
    through the client's own connections. Lookups go through the ``circuit``: while Consul is known to be down, they
    fail at once instead of waiting a timeout each."""

    def __init__(self, client: ConsulClient, circuit: Circuit | None = None) -> None:
        self.client = client
        self.circuit = circuit or Circuit()
        self._pool: WatchPool | None = None
        self._cache: dict[CacheKey, tuple[float, list[Instance]]] = {}
        self._watches: dict[CacheKey, ServiceWatch] = {}
        self._lock = threading.Lock()
        self._in_flight: dict[str, int] = {}
        self._positions: dict[str, int] = {}

    def instances(self, name: str, tag: str | None, datacenter: str | None, passing_only: bool) -> list[Instance]:
        """From the cache while a watch keeps it current; otherwise one request."""
        key: CacheKey = (name, tag, datacenter, passing_only)
        with self._lock:
            watch = self._watches.get(key)
            cached = self._cache.get(key)
        if watch is not None and watch.active and cached is not None:
            return cached[1]
        self.circuit.check()
        try:
            _, entries = self.client.health_service(
                name, passing=passing_only, tags=[tag] if tag else [], datacenter=datacenter
            )
        except ConsulUnavailable as err:
            # the agent did not answer (a missing leader or a 429 is an answer); a timeout asking another datacenter
            # may be that datacenter's, not the agent's
            if err.status is None and (datacenter is None or isinstance(err, AgentUnreachable)):
                self.circuit.failed(err)
            raise
        self.circuit.succeeded()
        found = healthy(entries, passing_only)
        with self._lock:
            self._cache[key] = (time.monotonic(), found)
        return found

    def watch(
        self,
        name: str,
        callback: Callable[[list[dict[str, Any]]], None] | None,
        *,
        tag: str | None = None,
        datacenter: str | None = None,
        passing_only: bool = True,
    ) -> ServiceWatch:
        key: CacheKey = (name, tag, datacenter, passing_only)

        def fetch(client: ConsulClient, index: int | None, wait: str) -> tuple[int, Any]:
            return client.health_service(
                name, passing=passing_only, tags=[tag] if tag else [], datacenter=datacenter, index=index, wait=wait
            )

        def changed(entries: Any) -> None:
            found = healthy(list(entries or []), passing_only)
            with self._lock:
                self._cache[key] = (time.monotonic(), found)
            if callback is not None:
                try:
                    callback([instance_dict(i) for i in found])
                except Exception:
                    log.exception("watch_service(%r) callback failed", name)

        with self._lock:
            previous = self._watches.pop(key, None)
        if previous is not None:
            previous.stop()
        handle = ServiceWatch(key, self.pool().add(f"service {name}", fetch, changed, notify_first=True))
        with self._lock:
            self._watches[key] = handle
        return handle

    def pool(self) -> WatchPool:
        """The watches' connections, created with the first watch and sized from the agent's per-client limit."""
        with self._lock:
            if self._pool is not None:
                return self._pool
        try:
            limit = self.client.agent_self().max_conns_per_client
        except ConsulError:
            limit = None
        size = connections_for(limit if limit is not None else 200, self.client.settings.watch_connections)
        pool = WatchPool(self.client, connections=size, on_error=lambda n, err: log.warning("watch %s: %s", n, err))
        with self._lock:
            if self._pool is None:
                self._pool = pool
            return self._pool

    def stop_all(self) -> None:
        with self._lock:
            watches, self._watches = list(self._watches.values()), {}
            pool, self._pool = self._pool, None
        for handle in watches:
            handle.stop()
        if pool is not None:
            pool.stop()

    def next_position(self, name: str) -> int:
        with self._lock:
            position = self._positions.get(name, 0)
            self._positions[name] = position + 1
            return position

    def in_flight(self) -> dict[str, int]:
        with self._lock:
            return dict(self._in_flight)

    @contextmanager
    def using(self, instance_id: str) -> Iterator[None]:
        with self._lock:
            self._in_flight[instance_id] = self._in_flight.get(instance_id, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._in_flight[instance_id] -= 1
                if not self._in_flight[instance_id]:
                    del self._in_flight[instance_id]


def default_service_id(service_name: str, port: int, hostname: str | None = None) -> str:
    """Unique per instance: two registries of one service on one port and one agent never undo each other."""
    host = (hostname or socket.gethostname()).split(".")[0]
    return f"{service_name}-{host}-{port}-{os.getpid()}-{os.urandom(3).hex()}"
