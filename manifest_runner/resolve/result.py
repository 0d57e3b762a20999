"""What a dependency resolved to, and from where (pure values shared by the resolver, the renderers and the runner).

``source`` is ``consul`` (fresh), ``cache`` (the last known good value, with its age), ``fallback`` (the manifest's
static value) or ``none`` (nothing: an optional dependency is left out; a required one is an error).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from manifest_runner.consul.payloads import Instance

Source = Literal["consul", "cache", "fallback", "none"]


@dataclass(frozen=True, slots=True)
class Resolved:
    name: str
    value: str | None
    source: Source
    optional: bool = False
    chosen: Instance | None = None
    instances: tuple[Instance, ...] = ()
    datacenter: str | None = None
    age: float | None = None
    """Seconds since the value was last obtained from Consul (cache source only)."""
    reason: str = ""
    """Why Consul did not give the value (when the source is not ``consul``)."""
    data: Any = field(default=None, compare=False)
    """For KV dependencies: the typed value (a map for a prefix), as the JSON output shows it."""
    group: str = ""
    """For variables of an ``env_from`` entry: the entry (they are replaced together)."""

    @property
    def failed(self) -> bool:
        """A required dependency that resolved from nothing."""
        return self.source == "none" and not self.optional

    def explain(self) -> str:
        """Why the value is not fresh from Consul, in words (empty for a value from Consul)."""
        if self.source == "cache":
            return f"the last known good value ({round(self.age or 0)}s old) is used: {self.reason}"
        if self.source == "fallback":
            return f"the static fallback is used: {self.reason}"
        if self.source == "none":
            return f"optional, left out: {self.reason}" if self.optional else f"no value: {self.reason}"
        return ""

    def same_outcome(self, other: Resolved | None) -> bool:
        """Equal in everything an output shows, the age excepted: the runner re-renders only when this changes."""
        if other is None:
            return False
        return (self.value, self.source, self.instances, self.chosen, self.datacenter, self.reason) == (
            other.value,
            other.source,
            other.instances,
            other.chosen,
            other.datacenter,
            other.reason,
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"value": self.value, "source": self.source}
        if self.age is not None:
            out["age_seconds"] = round(self.age)
        if self.datacenter:
            out["datacenter"] = self.datacenter
        if self.chosen is not None:
            out["instance"] = self.chosen.to_json()
        if self.instances:
            out["instances"] = [i.to_json() for i in self.instances]
        if self.data is not None:
            out["data"] = self.data
        if self.reason:
            out["reason"] = self.reason
        return out
