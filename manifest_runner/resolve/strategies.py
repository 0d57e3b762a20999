"""How to pick one instance among the healthy ones (pure: randomness and state come in as parameters).

- ``first``: the first instance in Consul's order (by node, or by round-trip time with ``near``): stable, for boot
  files that must not change from one render to the next.
- ``random``: uniform among the healthy instances.
- ``health_weighted``: in proportion to Consul's own service weights: ``weights.passing`` for a passing instance,
  ``weights.warning`` for one whose checks warn (0 means "no traffic while warning").
- ``round_robin``: cycles through the instances in a stable order (by id); the position is the caller's and any
  number is valid, so a list that shrinks never breaks it.
- ``least_connections``: the instance with the fewest uses in flight (the caller counts them); ties are broken at
  random, so that idle instances share the load instead of the first one taking it all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from manifest_runner.consul.payloads import Instance
from manifest_runner.manifest.formatting import fill

STRATEGIES = ("health_weighted", "random", "round_robin", "first", "least_connections")


def pick(
    strategy: str,
    instances: Sequence[Instance],
    *,
    uniform: Callable[[], float],
    position: int = 0,
    in_flight: Mapping[str, int] | None = None,
) -> Instance:
    """One instance by ``strategy``. ``uniform`` returns a float in [0, 1); ``position`` drives round_robin."""
    if not instances:
        raise ValueError("no instance to pick from")
    if strategy == "first":
        return instances[0]
    if strategy == "random":
        return instances[min(int(uniform() * len(instances)), len(instances) - 1)]
    ordered = sorted(instances, key=lambda i: i.id)
    if strategy == "round_robin":
        return ordered[position % len(ordered)]
    if strategy == "least_connections":
        counts = in_flight or {}
        least = min(counts.get(i.id, 0) for i in ordered)
        tied = [i for i in ordered if counts.get(i.id, 0) == least]
        return tied[min(int(uniform() * len(tied)), len(tied) - 1)]
    if strategy == "health_weighted":
        weighted = [i for i in ordered if i.weight > 0] or ordered
        total = sum(max(i.weight, 1) for i in weighted)
        target = uniform() * total
        for instance in weighted:
            target -= max(instance.weight, 1)
            if target < 0:
                return instance
        return weighted[-1]
    raise ValueError(f"unknown strategy {strategy!r}; one of {', '.join(STRATEGIES)}")


def format_instance(template: str, instance: Instance) -> str:
    """Fill a dependency's ``format`` with an instance (see :mod:`manifest_runner.manifest.formatting`)."""
    return fill(template, instance.fields())
