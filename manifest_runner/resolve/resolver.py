"""Dependencies -> values, through the fallback chain: Consul, then the last known good value, then the static fallback.

Consul: healthy instances only (passing; warning too with ``include_warning``), with ``tag`` / ``filter`` / ``near``,
from the first datacenter in ``datacenters`` that has any; an empty service address is replaced by its node's;
one instance picked by the strategy and formatted. A KV dependency reads a key (typed, see :mod:`kvcodec`) or every
key under a prefix (a JSON map).

The chain, exactly:

1. Each datacenter in order. One that cannot answer (its servers unreachable, a timeout, a 5xx, an ACL denial, an
   answer that is not Consul's) is skipped and named in the result; the first with a healthy instance gives the
   value (source ``consul``, its ``reason`` naming the datacenters that failed before it).
2. No datacenter had one. If every datacenter **answered** (no healthy instance, no such key), that answer is
   authoritative: the static ``fallback`` is used, never the cache (a dead address must not outlive its service).
3. If some datacenter **could not answer**, or the agent itself cannot be reached, the last known good value is used
   when it is not older than ``max_age``; otherwise the static ``fallback``.
4. Nothing: an optional dependency is left out; a required one fails.

The whole pass shares one time budget: each request is capped to what is left. Dependencies are resolved
concurrently (at most :data:`PARALLEL` at a time); once the agent is found unreachable, the remaining ones skip it,
so the agent being down costs one failed request, not one per dependency.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from manifest_runner.consul import kvcodec
from manifest_runner.consul.base import LEADER, Freshness
from manifest_runner.consul.client import ConsulClient
from manifest_runner.consul.payloads import Instance
from manifest_runner.errors import AgentUnreachable, ConsulError, ConsulRefused, ConsulUnavailable
from manifest_runner.manifest.model import Dependency, KVDependency, Reads, ServiceDependency
from manifest_runner.resolve.cache import LastKnownGood, spec_hash
from manifest_runner.resolve.result import Resolved
from manifest_runner.resolve.strategies import format_instance, pick
from manifest_runner.util.durations import format_duration, parse_duration

PARALLEL = 16
"""Dependencies resolved at once by one pass."""


class NotFound(Exception):
    """Consul answered, and there is nothing: no healthy instance, or no such key (authoritative: no cache)."""


class CannotAnswer(Exception):
    """Consul could not answer for this dependency (every datacenter tried failed, or some failed and the others
    had nothing): the last known good value may be used."""


def freshness_of(reads: Reads) -> Freshness:
    """The manifest's ``reads`` as the adapter's read mode."""
    if reads.consistency == "default":
        return LEADER
    return Freshness(max_stale=parse_duration(reads.max_stale), cached=reads.consistency == "cached")


def describe(err: ConsulError) -> str:
    """One line for a failed read, by kind."""
    if isinstance(err, ConsulRefused):
        return f"refused: {err}"
    if isinstance(err, ConsulUnavailable):
        return f"unavailable: {err.detail}"
    return f"error: {err}"


@dataclass
class Budget:
    """A deadline shared by every request of one resolution pass."""

    deadline: float
    clock: Callable[[], float] = time.monotonic

    @classmethod
    def of(cls, seconds: float | None, clock: Callable[[], float] = time.monotonic) -> Budget:
        return cls(clock() + (seconds if seconds is not None else 3600.0), clock)

    def left(self) -> float:
        return max(0.0, self.deadline - self.clock())


def kv_text(value: Any) -> str:
    """A typed KV value as an environment variable's text: text as it is, anything else as compact JSON."""
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), sort_keys=True)


class Resolver:
    """Resolves one owner's dependencies. Keep it across passes (``run``, ``exec --watch``) so that round_robin
    advances and a random or weighted pick stays on its instance while that instance stays healthy (``sticky``),
    instead of moving, and restarting a child, at every change anywhere."""

    def __init__(
        self,
        client: ConsulClient | None,
        cache: LastKnownGood,
        *,
        uniform: Callable[[], float] | None = None,
        clock: Callable[[], float] = time.time,
        sticky: bool = True,
        offline_reason: str = "Consul was not asked (--offline)",
    ) -> None:
        self.client = client
        self.offline_reason = offline_reason
        self.cache = cache
        self.uniform = uniform or random.Random().random  # noqa: S311 - load balancing, not cryptography
        self.clock = clock
        self.sticky = sticky
        self.positions: dict[str, int] = {}
        self.previous: dict[str, Resolved] = {}
        self._lock = threading.Lock()

    def resolve(
        self, dependencies: Mapping[str, Dependency], budget: Budget | None = None, freshness: Freshness = LEADER
    ) -> list[Resolved]:
        """Every dependency, in name order, within ``budget``; up to :data:`PARALLEL` at once."""
        budget = budget or Budget.of(None)
        names = sorted(dependencies)
        state = _PassState()
        if not names:
            return []
        # the first alone: when the agent is down, that one request says so and the others do not ask
        results = [self._one(names[0], dependencies[names[0]], budget, freshness, state)]
        rest = names[1:]
        if len(rest) > 1 and self.client is not None and state.unreachable is None:
            with ThreadPoolExecutor(max_workers=min(PARALLEL, len(rest))) as pool:
                results += pool.map(lambda n: self._one(n, dependencies[n], budget, freshness, state), rest)
        else:
            results += [self._one(n, dependencies[n], budget, freshness, state) for n in rest]
        return results

    def _one(
        self, name: str, dependency: Dependency, budget: Budget, freshness: Freshness, state: _PassState
    ) -> Resolved:
        fresh: Resolved | None = None
        use_cache = True
        reason = state.unreachable or ""
        if self.client is None:
            reason = self.offline_reason
        elif state.unreachable is None:
            if budget.left() <= 0:
                reason = "the time budget ran out before Consul was asked"
            else:
                try:
                    fresh = self.from_consul(name, dependency, budget, freshness)
                except AgentUnreachable as err:
                    reason = f"Consul unreachable: {err.detail}"
                    state.unreachable = reason
                except ConsulUnavailable as err:
                    reason = f"Consul {'unreachable' if err.status is None else 'unavailable'}: {err.detail}"
                    if err.status is None and dependency_datacenters(dependency) == [None]:
                        state.unreachable = reason  # the local agent did not answer in time: do not ask it again
                except ConsulError as err:
                    reason = f"Consul {describe(err)}"
                except CannotAnswer as err:
                    reason = str(err)
                except NotFound as err:
                    reason, use_cache = str(err), False
        result = fresh or self.from_fallbacks(name, dependency, reason, use_cache=use_cache)
        with self._lock:
            if fresh is not None:
                self.cache.remember(fresh, spec_hash(dependency), self.clock())
            self.previous[name] = result
        return result

    def _client(self) -> ConsulClient:
        if self.client is None:
            raise NotFound(self.offline_reason)
        return self.client

    def from_consul(self, name: str, dependency: Dependency, budget: Budget, freshness: Freshness = LEADER) -> Resolved:
        if isinstance(dependency, KVDependency):
            result = self._from_kv(name, dependency, budget, freshness)
        else:
            result = self._from_service(name, dependency, budget, freshness)
        if result.value is not None and "\x00" in result.value:
            raise NotFound("the value from Consul holds a NUL byte, which no environment variable can")
        return result

    def _from_service(self, name: str, dependency: ServiceDependency, budget: Budget, freshness: Freshness) -> Resolved:
        client = self._client()
        tags = [dependency.tag] if isinstance(dependency.tag, str) else list(dependency.tag or [])
        empty: list[str] = []
        failed: list[str] = []
        timeouts = 0
        datacenters = dependency_datacenters(dependency)
        for datacenter in datacenters:
            label = datacenter or "the local datacenter"
            try:
                _, found = client.health_service(
                    dependency.service,
                    passing=not dependency.include_warning,
                    tags=tags,
                    datacenter=datacenter,
                    filter_expr=dependency.filter,
                    near=dependency.near,
                    timeout=max(budget.left(), 0.001),
                    freshness=freshness,
                )
            except AgentUnreachable:
                raise
            except ConsulError as err:
                if len(datacenters) == 1:
                    raise
                timeouts += isinstance(err, ConsulUnavailable) and err.status is None
                failed.append(f"{label} {describe(err)}")
                continue
            instances = tuple(i for i in found if i.status != "critical")
            if instances:
                chosen = self._choose(name, dependency, instances)
                return Resolved(
                    name,
                    format_instance(dependency.format, chosen),
                    "consul",
                    dependency.optional,
                    chosen,
                    instances,
                    chosen.datacenter or datacenter,
                    reason="; ".join(failed),
                )
            empty.append(label)
        tag_text = f" tagged {', '.join(tags)}" if tags else ""
        nothing = f"no healthy instance of {dependency.service}{tag_text} in {', '.join(empty)}" if empty else ""
        if failed:
            if timeouts == len(datacenters):
                raise ConsulUnavailable("; ".join(failed))
            raise CannotAnswer("; ".join([*failed, *([nothing] if nothing else [])]))
        raise NotFound(nothing)

    def _choose(self, name: str, dependency: ServiceDependency, instances: tuple[Instance, ...]) -> Instance:
        previous = self.previous.get(name)
        if (
            self.sticky
            and dependency.strategy in ("random", "health_weighted")
            and previous is not None
            and previous.source == "consul"
            and previous.chosen is not None
        ):
            still = next((i for i in instances if i.id == previous.chosen.id and i.weight > 0), None)
            if still is not None:
                return still
        position = self.positions.get(name, 0)
        self.positions[name] = position + 1
        return pick(dependency.strategy, instances, uniform=self.uniform, position=position)

    def _from_kv(self, name: str, dependency: KVDependency, budget: Budget, freshness: Freshness) -> Resolved:
        client = self._client()
        key = dependency.kv
        prefix = key.endswith("/")
        _, entries = client.kv_get(
            key,
            recurse=prefix,
            datacenter=dependency.datacenter,
            timeout=max(budget.left(), 0.001),
            freshness=freshness,
        )
        if prefix:
            data = {e.key[len(key) :]: kvcodec.decode(e.value, e.flags) for e in entries if not e.key.endswith("/")}
            if not data:
                raise NotFound(f"no key under {key}")
            return Resolved(name, kv_text(data), "consul", dependency.optional, data=data)
        if not entries:
            raise NotFound(f"the key {key} does not exist")
        value = kvcodec.decode(entries[0].value, entries[0].flags)
        if value is None:
            raise NotFound(f"the key {key} holds binary data, which cannot be an environment variable")
        return Resolved(name, kv_text(value), "consul", dependency.optional, data=value)

    def from_fallbacks(self, name: str, dependency: Dependency, reason: str, *, use_cache: bool = True) -> Resolved:
        """The last known good value (if young enough and ``use_cache``: Consul could not answer), else the static
        fallback, else nothing."""
        with self._lock:
            cached = self.cache.get(name, spec_hash(dependency)) if use_cache else None
        if cached is not None:
            age = max(0.0, self.clock() - cached.resolved_at)
            limit = parse_duration(dependency.max_age) if dependency.max_age else None
            if limit is None or age <= limit:
                return Resolved(
                    name,
                    cached.value,
                    "cache",
                    dependency.optional,
                    cached.chosen,
                    cached.instances,
                    cached.datacenter,
                    age,
                    reason,
                    cached.data,
                )
            reason += f"; the last known good value is {format_duration(age)} old, over max_age {dependency.max_age}"
        if dependency.fallback is not None:
            return Resolved(name, dependency.fallback, "fallback", dependency.optional, reason=reason)
        return Resolved(name, None, "none", dependency.optional, reason=reason)


@dataclass
class _PassState:
    """What the dependencies of one pass share: whether the agent was found unreachable."""

    unreachable: str | None = None


def dependency_datacenters(dependency: Dependency) -> list[str | None]:
    """The datacenters a dependency is read from, in order (None: the agent's own)."""
    if isinstance(dependency, KVDependency):
        return [dependency.datacenter]
    return [*dependency.datacenters] if dependency.datacenters else [None]
