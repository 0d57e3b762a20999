"""Dependencies -> values, through the fallback chain: Consul, the last known good value, the static fallback.

Consul: healthy instances only (passing; warning too with ``include_warning``), with ``tag`` / ``filter`` / ``near``,
from the first datacenter in ``datacenters`` that has any; an empty service address is replaced by its node's;
one instance picked by the strategy and formatted. A KV dependency reads a key (typed, see :mod:`kvcodec`) or every
key under a prefix (a JSON map). When Consul cannot give a value (unreachable, refusing, or no healthy instance /
no such key), the last known good value is used if it is not older than ``max_age``, then the static ``fallback``;
otherwise the dependency resolves to nothing, which fails a required one. Every result records its source and why.

The whole pass shares one time budget: each request is capped to what is left, and once Consul is found
unreachable the remaining dependencies skip it, so Consul being down costs one failed request, not one per
dependency.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from manifest_runner.consul import kvcodec
from manifest_runner.consul.client import ConsulClient
from manifest_runner.consul.payloads import Instance
from manifest_runner.errors import ConsulError, ConsulRefused, ConsulUnavailable
from manifest_runner.manifest.model import Dependency, KVDependency, ServiceDependency
from manifest_runner.resolve.cache import LastKnownGood, spec_hash
from manifest_runner.resolve.result import Resolved
from manifest_runner.resolve.strategies import format_instance, pick
from manifest_runner.util.durations import format_duration, parse_duration


class NotFound(Exception):
    """Consul answered, and there is nothing: no healthy instance, or no such key."""


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

    def resolve(self, dependencies: Mapping[str, Dependency], budget: Budget | None = None) -> list[Resolved]:
        """Every dependency, in name order, within ``budget``."""
        budget = budget or Budget.of(None)
        unreachable: str | None = None
        results: list[Resolved] = []
        for name in sorted(dependencies):
            dependency = dependencies[name]
            fresh: Resolved | None = None
            reason = unreachable or ""
            if self.client is None:
                reason = self.offline_reason
            elif unreachable is None:
                if budget.left() <= 0:
                    reason = "the time budget ran out before Consul was asked"
                else:
                    try:
                        fresh = self.from_consul(name, dependency, budget)
                    except ConsulUnavailable as err:
                        unreachable = reason = f"Consul unreachable: {err.detail}"
                    except ConsulRefused as err:
                        reason = f"Consul refused: {err}"
                    except ConsulError as err:
                        reason = f"Consul error: {err}"
                    except NotFound as err:
                        reason = str(err)
            result = fresh or self.from_fallbacks(name, dependency, reason)
            if fresh is not None:
                self.cache.remember(fresh, spec_hash(dependency), self.clock())
            self.previous[name] = result
            results.append(result)
        return results

    def _client(self) -> ConsulClient:
        if self.client is None:
            raise NotFound(self.offline_reason)
        return self.client

    def from_consul(self, name: str, dependency: Dependency, budget: Budget) -> Resolved:
        if isinstance(dependency, KVDependency):
            result = self._from_kv(name, dependency, budget)
        else:
            result = self._from_service(name, dependency, budget)
        if result.value is not None and "\x00" in result.value:
            raise NotFound("the value from Consul holds a NUL byte, which no environment variable can")
        return result

    def _from_service(self, name: str, dependency: ServiceDependency, budget: Budget) -> Resolved:
        client = self._client()
        tags = [dependency.tag] if isinstance(dependency.tag, str) else list(dependency.tag or [])
        tried: list[str] = []
        datacenters: list[str | None] = [*dependency.datacenters] if dependency.datacenters else [None]
        for datacenter in datacenters:
            _, found = client.health_service(
                dependency.service,
                passing=not dependency.include_warning,
                tags=tags,
                datacenter=datacenter,
                filter_expr=dependency.filter,
                near=dependency.near,
                timeout=max(budget.left(), 0.001),
            )
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
                )
            tried.append(datacenter or "the local datacenter")
        tag_text = f" tagged {', '.join(tags)}" if tags else ""
        raise NotFound(f"no healthy instance of {dependency.service}{tag_text} in {', '.join(tried)}")

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

    def _from_kv(self, name: str, dependency: KVDependency, budget: Budget) -> Resolved:
        client = self._client()
        key = dependency.kv
        prefix = key.endswith("/")
        _, entries = client.kv_get(
            key, recurse=prefix, datacenter=dependency.datacenter, timeout=max(budget.left(), 0.001)
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

    def from_fallbacks(self, name: str, dependency: Dependency, reason: str) -> Resolved:
        """The last known good value (if young enough), else the static fallback, else nothing."""
        cached = self.cache.get(name, spec_hash(dependency))
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
