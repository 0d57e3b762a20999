"""``ConsulRegistry``: the service-discovery client library (``docs/library.md``), every method and promise kept.

Four lines of service discovery, on the same core as the runner (the adapter, the strategies, the watch loops, the
typed KV encoding, the locks)::

    registry = ConsulRegistry(service_name="api-service", service_port=8080)
    registry.register()
    db_url = registry.get_service_endpoint("database-service", fallback_url="localhost:5432")
    registry.deregister()

What is raised (see :mod:`manifest_runner.errors`): :class:`ConsulUnavailable` / :class:`ConsulRefused` when Consul
cannot be reached or refuses and the method has no fallback to give; :class:`ServiceNotFound` when a service has no
healthy instance and no fallback was given. Nothing is swallowed: a fallback used because Consul is away is logged
(once, and once again when Consul is back).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, Any

from manifest_runner.config import ConsulConfig
from manifest_runner.consul.client import ConsulClient
from manifest_runner.consul.heartbeat import TtlHeartbeat
from manifest_runner.consul.lock import Lock
from manifest_runner.consul.payloads import Instance
from manifest_runner.errors import AgentUnreachable, ConsulError, ConsulUnavailable, LockTimeout, ResolveError
from manifest_runner.library.circuit import Circuit
from manifest_runner.library.configuration import ConfigStore
from manifest_runner.library.discovery import (
    Discovery,
    ServiceWatch,
    default_service_id,
    instance_dict,
    registry_settings,
    routable_address,
)
from manifest_runner.library.infrastructure import INFRASTRUCTURE, InfrastructureHelpers
from manifest_runner.marks import MANAGED_BY_KEY, MANAGED_BY_LIBRARY
from manifest_runner.resolve.strategies import STRATEGIES, pick
from manifest_runner.util.backoff import Backoff
from manifest_runner.util.durations import format_duration, parse_duration

if TYPE_CHECKING:
    from manifest_runner.library.election import Election

log = logging.getLogger("consul_manifest.registry")


class ServiceNotFound(ResolveError):
    """No healthy instance of the service (in any datacenter asked), and no fallback was given."""


def _seconds(value: float | int | str) -> float:
    return float(value) if isinstance(value, int | float) else parse_duration(value)


class ConsulRegistry(ConfigStore, InfrastructureHelpers):
    """Register one service instance, discover others, keep configuration, take locks, watch for changes."""

    def __init__(
        self,
        service_name: str,
        service_port: int,
        consul_host: str | None = None,
        consul_port: int | None = None,
        tags: Sequence[str] | None = None,
        health_check_type: str = "ttl",
        ttl_interval: float | str = 30,
        check_interval: str = "10s",
        deregister_after: str = "1m",
        *,
        service_id: str | None = None,
        service_address: str | None = None,
        meta: dict[str, str] | None = None,
        health_check_path: str = "/health",
        config_prefix: str | None = None,
        datacenter: str | None = None,
        token: str | None = None,
        consul_addresses: Sequence[str] = (),
        infrastructure_services: dict[str, str] | None = None,
        settings: ConsulConfig | None = None,
    ) -> None:
        if health_check_type not in ("ttl", "http"):
            raise ValueError("health_check_type is 'ttl' or 'http'")
        if parse_duration(deregister_after) < 60:
            raise ValueError(f"deregister_after {deregister_after!r} is below Consul's 1m minimum")
        self.service_name = service_name
        self.service_port = int(service_port)
        self.tags = list(tags or [])
        self.meta = dict(meta or {})
        self.health_check_type = health_check_type
        self.ttl = _seconds(ttl_interval)
        self.check_interval = check_interval
        self.deregister_after = deregister_after
        self.health_check_path = health_check_path
        self.config_prefix = config_prefix if config_prefix is not None else f"{service_name}/"
        self.infrastructure = {k: (infrastructure_services or {}).get(k, v[0]) for k, v in INFRASTRUCTURE.items()}
        self.settings = settings or registry_settings(consul_host, consul_port, consul_addresses, datacenter, token)
        self.client = ConsulClient(self.settings)
        self.circuit = Circuit(probe=self.client.leader)
        self.discovery = Discovery(self.client, self.circuit)
        self.service_address = (
            service_address if service_address is not None else routable_address(self.client.endpoint)
        )
        self.service_id = service_id or default_service_id(service_name, self.service_port)
        self.registered = False
        self._heartbeat: TtlHeartbeat | None = None

    @property
    def consul(self) -> Any:
        """The py-consul client (``consul.Consul``) on this registry's connection, e.g.
        ``registry.consul.agent.check.ttl_pass(f"service:{registry.service_id}", "ok")``."""
        return self.client.raw

    @property
    def check_id(self) -> str:
        return f"service:{self.service_id}"

    # -- registration -----------------------------------------------------------------------------------------

    def registration(self) -> dict[str, Any]:
        """The body of the agent registration this registry sends."""
        check: dict[str, Any] = {"CheckID": self.check_id, "DeregisterCriticalServiceAfter": self.deregister_after}
        if self.health_check_type == "ttl":
            check.update(TTL=format_duration(self.ttl), Status="passing")  # it is alive: it is registering itself
        else:
            host = self.service_address or "127.0.0.1"
            check.update(
                HTTP=f"http://{host}:{self.service_port}{self.health_check_path}", Interval=self.check_interval
            )
        body: dict[str, Any] = {
            "ID": self.service_id,
            "Name": self.service_name,
            "Port": self.service_port,
            "Tags": self.tags,
            "Meta": {**self.meta, MANAGED_BY_KEY: MANAGED_BY_LIBRARY},
            "Check": check,
        }
        if self.service_address:
            body["Address"] = self.service_address
        return body

    def register(self) -> bool:
        """Register with the local agent (replacing checks). True on success; raises ConsulError otherwise."""
        self.client.register_service(self.registration())
        self.registered = True
        log.info("registered %s as %s", self.service_name, self.service_id)
        return True

    def deregister(self) -> bool:
        """Deregister this instance (and stop the heartbeat). True on success; raises ConsulError otherwise."""
        self.stop_heartbeat()
        self.client.deregister_service(self.service_id)
        self.registered = False
        return True

    def heartbeat(self, note: str = "", status: str = "passing") -> None:
        """One TTL update: ``passing``, ``warning`` or ``critical``."""
        self.client.update_ttl(self.check_id, status, note)

    def start_heartbeat(
        self, every: float | None = None, probe: Callable[[], bool | str | None] | None = None
    ) -> ConsulRegistry:
        """Keep the TTL check passing from a background thread, every ``every`` seconds (default: a third of the
        TTL). ``probe`` may say otherwise: False or "critical"/"warning" reports that status instead."""
        if self.health_check_type != "ttl":
            raise ValueError("start_heartbeat is for TTL checks (health_check_type='ttl')")
        self.stop_heartbeat()
        interval = every if every is not None else self.ttl / 3

        def report() -> tuple[str, str]:
            result = probe() if probe is not None else True
            status = result if isinstance(result, str) else "passing" if result in (True, None) else "critical"
            return status, f"heartbeat at {time.strftime('%H:%M:%S')}"

        self._heartbeat = TtlHeartbeat(
            self.client, self.check_id, interval, report, on_missing=lambda _check: self._register_again()
        ).start()
        return self

    def _register_again(self) -> None:
        """The agent lost our registration (it restarted empty): register again, if we still want to be."""
        if self.registered:
            try:
                self.register()
            except ConsulError as err:
                log.warning("registering %s again: %s", self.service_id, err)

    def stop_heartbeat(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.stop()
            self._heartbeat = None

    def __enter__(self) -> ConsulRegistry:
        self.register()
        if self.health_check_type == "ttl":
            self.start_heartbeat()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop watches and the heartbeat, deregister if registered, close connections."""
        self.discovery.stop_all()
        self.stop_heartbeat()
        if self.registered:
            try:
                self.deregister()
            except ConsulError as err:
                log.warning("deregistering %s on close: %s", self.service_id, err)
        self.client.close()

    # -- discovery --------------------------------------------------------------------------------------------

    def discover_service(
        self, service_name: str, tag: str | None = None, datacenter: str | None = None, passing_only: bool = True
    ) -> list[dict[str, Any]]:
        """Instances as dicts: id, name, address, port, tags, meta, status, node, datacenter, weights.
        Healthy ones only by default (passing); ``passing_only=False`` adds warning and critical ones."""
        return [instance_dict(i) for i in self.discovery.instances(service_name, tag, datacenter, passing_only)]

    def _instances(self, name: str, tag: str | None, datacenters: Sequence[str | None]) -> list[Instance]:
        """Healthy instances from the first datacenter that has any. A datacenter that cannot answer is skipped
        (logged as that datacenter's failure); when none answered, the last failure is raised."""
        failure: ConsulError | None = None
        answered = False
        for datacenter in datacenters:
            try:
                found = self.discovery.instances(name, tag, datacenter, True)
            except AgentUnreachable:
                raise
            except ConsulError as err:
                if len(datacenters) == 1 or err.operation == "circuit":
                    raise
                log.warning("%s in datacenter %s: %s; trying the next datacenter", name, datacenter or "local", err)
                failure = err
                continue
            answered = True
            if found:
                return found
        if failure is not None and not answered:
            raise failure
        return []

    def _choose(self, name: str, strategy: str, instances: list[Instance]) -> Instance:
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {strategy!r}; one of {', '.join(STRATEGIES)}")
        import random

        return pick(
            strategy,
            instances,
            uniform=random.random,
            position=self.discovery.next_position(name),
            in_flight=self.discovery.in_flight(),
        )

    def _endpoint(
        self,
        name: str,
        strategy: str,
        fallback_url: str | None,
        tag: str | None,
        datacenters: Sequence[str | None],
        template: str = "{address}:{port}",
    ) -> str:
        try:
            instances = self._instances(name, tag, datacenters)
        except ConsulError as err:
            self._down(err)
            if fallback_url is not None:
                return fallback_url
            raise
        self._up()
        if not instances:
            if fallback_url is not None:
                log.info("no healthy instance of %s: using the fallback %s", name, fallback_url)
                return fallback_url
            raise ServiceNotFound(f"no healthy instance of {name}")
        chosen = self._choose(name, strategy, instances)
        return template.format(address=chosen.host, port=chosen.port)

    def get_service_endpoint(
        self,
        service_name: str,
        strategy: str = "health_weighted",
        fallback_url: str | None = None,
        *,
        tag: str | None = None,
        datacenter: str | None = None,
        datacenters: Sequence[str] | None = None,
    ) -> str:
        """``address:port`` of one healthy instance, picked by ``strategy``; ``fallback_url`` when there is none
        or Consul is away (logged). ``datacenters`` are tried in order."""
        places: list[str | None] = list(datacenters) if datacenters else [datacenter]
        return self._endpoint(service_name, strategy, fallback_url, tag, places)

    def get_service_address(
        self,
        service_name: str,
        fallback_url: str | None = None,
        max_retries: int = 3,
        *,
        strategy: str = "health_weighted",
        backoff: float = 0.1,
    ) -> str:
        """Like get_service_endpoint, retrying (with exponential backoff from ``backoff`` seconds) while Consul is
        away or the service has no healthy instance; then the fallback."""
        pace = Backoff(start=backoff, cap=30.0, jitter=False)
        for attempt in range(max(1, max_retries)):
            try:
                return self._endpoint(service_name, strategy, None, None, [None])
            except (ConsulError, ServiceNotFound) as err:
                last: Exception = err
                if isinstance(err, ConsulUnavailable) and self.circuit.is_open:
                    break  # Consul is known to be down: waiting and asking again would only cost the caller time
                if attempt + 1 < max_retries:
                    time.sleep(pace.next())
        if fallback_url is not None:
            said_already = isinstance(last, ConsulUnavailable) and last.operation == "circuit"  # logged as it opened
            log.log(
                logging.DEBUG if said_already else logging.WARNING,
                "%s: %s; using the fallback %s",
                service_name,
                last,
                fallback_url,
            )
            return fallback_url
        raise last

    @contextmanager
    def connection(
        self, service_name: str, strategy: str = "least_connections", fallback_url: str | None = None
    ) -> Iterator[str]:
        """``with registry.connection("api") as endpoint:`` counts the use as in flight while the block runs, so
        that ``least_connections`` sends the next one to the least busy instance."""
        instances = self._instances(service_name, None, [None])
        if not instances:
            if fallback_url is None:
                raise ServiceNotFound(f"no healthy instance of {service_name}")
            yield fallback_url
            return
        chosen = self._choose(service_name, strategy, instances)
        with self.discovery.using(chosen.id):
            yield f"{chosen.host}:{chosen.port}"

    def watch_service(
        self,
        service_name: str,
        callback: Callable[[list[dict[str, Any]]], None] | None = None,
        *,
        tag: str | None = None,
        datacenter: str | None = None,
        passing_only: bool = True,
    ) -> ServiceWatch:
        """Call ``callback(instances)`` now and on every change (blocking queries); while the watch is live,
        discovery and endpoint lookups of that service cost no request. ``.stop()`` the returned handle."""
        return self.discovery.watch(service_name, callback, tag=tag, datacenter=datacenter, passing_only=passing_only)

    def _down(self, err: ConsulError) -> None:
        if isinstance(err, ConsulUnavailable) and err.status is None and err.operation != "circuit":
            self.circuit.failed(err)

    def _up(self) -> None:
        self.circuit.succeeded()

    def _guard(self) -> None:
        self.circuit.check()

    # -- sessions and locks -----------------------------------------------------------------------------------

    def lock(
        self, name: str, ttl: float = 15, timeout: float = 60.0, lock_delay: float = 15.0, key_prefix: str = "locks/"
    ) -> Lock:
        """A distributed lock: ``with registry.lock("jobs", ttl=15):``. Blocks up to ``timeout`` seconds, then
        raises LockTimeout. A holder that dies loses it after the session TTL (Consul may take up to twice it)
        and the lock-delay."""
        return Lock(
            self.client,
            f"{key_prefix}{name}",
            timeout=timeout,
            ttl=max(10.0, ttl),
            lock_delay=lock_delay,
            name=f"{self.service_id} lock {name}",
        )

    def try_lock(self, name: str, ttl: float = 15, lock_delay: float = 15.0, key_prefix: str = "locks/") -> Lock | None:
        """Take the lock if it is free right now: the held Lock (``release()`` it), or None."""
        lock = self.lock(name, ttl, timeout=0, lock_delay=lock_delay, key_prefix=key_prefix)
        if lock.acquire():
            return lock
        lock.release()
        return None

    def leader_election(
        self,
        name: str,
        on_elected: Callable[[], None] | None = None,
        on_lost: Callable[[], None] | None = None,
        ttl: float = 15,
        key_prefix: str = "leaders/",
    ) -> Election:
        """Campaign in the background for leadership of ``name``; ``.is_leader``, ``.stop()``."""
        from manifest_runner.library.election import Election

        def make_lock() -> Lock:
            return self.lock(name, ttl, timeout=0.5, lock_delay=1.0, key_prefix=key_prefix)

        return Election(make_lock, name, on_elected, on_lost).start()


__all__ = ["INFRASTRUCTURE", "ConsulRegistry", "LockTimeout", "ServiceNotFound", "ServiceWatch"]
