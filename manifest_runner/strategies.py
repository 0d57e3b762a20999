"""Healthy instances and how to pick one (pure: randomness and state come in as parameters).

- ``first``: the first instance in Consul's order (by node, or by round-trip time with ``near``): stable, for boot
  files that must not change from one render to the next.
- ``random``: uniform among the healthy instances.
- ``health_weighted``: in proportion to Consul's own service weights: ``weights.passing`` for a passing instance,
  ``weights.warning`` for one whose checks warn (0 means "no traffic while warning").
- ``round_robin``: cycles through the instances in a stable order (by id); the position is the caller's and any
  number is valid, so a list that shrinks never breaks it.
- ``least_connections``: the instance with the fewest uses in flight (the caller counts them; ties in id order).
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

Status = Literal["passing", "warning", "critical"]
STRATEGIES = ("health_weighted", "random", "round_robin", "first", "least_connections")
FORMAT_FIELDS = frozenset({"address", "host", "port", "id", "node", "datacenter", "meta", "tags", "service"})


@dataclass(frozen=True, slots=True)
class Instance:
    """One healthy instance of a service, as a dependency sees it."""

    id: str
    service: str
    address: str
    port: int
    node: str = ""
    datacenter: str = ""
    tags: tuple[str, ...] = ()
    meta: tuple[tuple[str, str], ...] = ()
    status: Status = "passing"
    weights: tuple[int, int] = (1, 1)

    @property
    def weight(self) -> int:
        return self.weights[0] if self.status == "passing" else self.weights[1] if self.status == "warning" else 0

    @property
    def host(self) -> str:
        """The address as it goes in a URL: IPv6 in brackets."""
        return f"[{self.address}]" if ":" in self.address and not self.address.startswith("[") else self.address

    def fields(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "host": self.host,
            "port": self.port,
            "id": self.id,
            "node": self.node,
            "datacenter": self.datacenter,
            "meta": dict(self.meta),
            "tags": ",".join(self.tags),
            "service": self.service,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "service": self.service,
            "address": self.address,
            "port": self.port,
            "node": self.node,
            "datacenter": self.datacenter,
            "tags": list(self.tags),
            "meta": dict(self.meta),
            "status": self.status,
            "weights": {"passing": self.weights[0], "warning": self.weights[1]},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Instance:
        weights = data.get("weights") or {}
        return cls(
            id=str(data["id"]),
            service=str(data.get("service", "")),
            address=str(data["address"]),
            port=int(data["port"]),
            node=str(data.get("node", "")),
            datacenter=str(data.get("datacenter", "")),
            tags=tuple(data.get("tags") or ()),
            meta=tuple(sorted((data.get("meta") or {}).items())),
            status=data.get("status", "passing"),
            weights=(int(weights.get("passing", 1)), int(weights.get("warning", 1))),
        )


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
        return min(ordered, key=lambda i: counts.get(i.id, 0))
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


class _Fields(string.Formatter):
    def get_field(self, field_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        name, rest = field_name.split("[", 1) if "[" in field_name else (field_name, "")
        if name not in FORMAT_FIELDS:
            raise KeyError(name)
        if name == "meta" and rest:
            key = rest.rstrip("]")
            return kwargs["meta"].get(key, ""), field_name
        return kwargs[name], field_name


def format_instance(template: str, instance: Instance) -> str:
    """Fill a dependency's ``format`` with an instance: ``{address}``, ``{host}``, ``{port}``, ``{id}``, ``{node}``,
    ``{datacenter}``, ``{service}``, ``{tags}`` (comma-separated) and ``{meta[KEY]}`` (empty when absent)."""
    return _Fields().vformat(template, (), instance.fields())


def format_problem(template: str) -> str | None:
    """Why a ``format`` template cannot work, or None. Checked when the manifest is validated."""
    try:
        for _, field_name, spec, conversion in string.Formatter().parse(template):
            if field_name is None:
                continue
            name = field_name.split("[", 1)[0]
            indexed = "[" in field_name and field_name.endswith("]")
            if name not in FORMAT_FIELDS or indexed != (name == "meta"):
                known = ", ".join("{" + f + ("[KEY]" if f == "meta" else "") + "}" for f in sorted(FORMAT_FIELDS))
                return f"unknown field {{{field_name}}}; use {known}"
            if spec or conversion:
                return f"{{{field_name}}}: format specs and conversions are not supported"
    except ValueError as err:
        return f"not a valid template: {err}"
    return None
