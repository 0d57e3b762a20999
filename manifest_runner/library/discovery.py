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
from manifest_runner.consul.blocking import BlockingLoop
from manifest_runner.consul.client import ConsulClient
from manifest_runner.consul.payloads import Instance
from manifest_runner.errors import ConsulError

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
    loop: BlockingLoop
    stopped: threading.Event = field(default_factory=threading.Event)

    def stop(self) -> None:
        self.stopped.set()
        self.loop.stop()

    @property
    def active(self) -> bool:
        return not self.stopped.is_set()


class Discovery:
    """Healthy instances of services, from Consul or from a cache that live watches keep current."""

    def __init__(self, client: ConsulClient) -> None:
        self.client = client
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
        _, entries = self.client.health_service(
            name, passing=passing_only, tags=[tag] if tag else [], datacenter=datacenter
        )
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

        loop = BlockingLoop(
            f"service {name}",
            self.client,
            fetch,
            changed,
            lambda n, err: log.warning("watch %s: %s", n, err),
            notify_first=True,
        )
        handle = ServiceWatch(key, loop)
        with self._lock:
            previous = self._watches.get(key)
            self._watches[key] = handle
        if previous is not None:
            previous.stop()
        loop.start()
        return handle

    def stop_all(self) -> None:
        with self._lock:
            watches, self._watches = list(self._watches.values()), {}
        for handle in watches:
            handle.stop()

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
