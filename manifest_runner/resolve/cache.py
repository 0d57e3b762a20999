"""The last known good value of each dependency, on disk, so that a boot without Consul still gets real values.

One JSON file per owner in the cache folder (``--cache-dir``, ``CONSUL_MANIFEST_CACHE_DIR``, default
``$XDG_CACHE_HOME/consul-manifest`` or ``~/.cache/consul-manifest``), written atomically after every resolution that
changed something. An entry is tied to a hash of the dependency's definition: change its ``service``, ``tag`` or
``format`` and the old value is no longer used. A cache that cannot be read or written is reported and ignored: it
never stops a render.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from manifest_runner.consul.payloads import Instance
from manifest_runner.errors import OutputError
from manifest_runner.resolve.result import Resolved
from manifest_runner.resolve.writer import write_atomic

CACHE_ENV = "CONSUL_MANIFEST_CACHE_DIR"


def default_cache_dir(environ: dict[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get(CACHE_ENV):
        return Path(env[CACHE_ENV])
    base = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "consul-manifest"


def spec_hash(definition: Any) -> str:
    """A short hash of a dependency's definition (a pydantic model or anything JSON can dump)."""
    text = definition.model_dump_json() if hasattr(definition, "model_dump_json") else json.dumps(definition)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class CachedValue:
    value: str
    resolved_at: float
    instances: tuple[Instance, ...]
    chosen: Instance | None
    datacenter: str | None
    data: Any = None


class LastKnownGood:
    """The cache of one owner. Load once, ``get`` and ``remember`` as needed, then ``save``."""

    def __init__(self, folder: Path | None, owner: str) -> None:
        self.path = folder / f"{owner}.json" if folder is not None else None
        self.entries: dict[str, dict[str, Any]] = {}
        self.dirty = False
        self.problem: str | None = None
        if self.path is not None:
            self._load()

    def _load(self) -> None:
        if self.path is None:
            return
        try:
            parsed = json.loads(self.path.read_text(encoding="utf-8"))
            entries = parsed.get("entries", {})
            if isinstance(entries, dict):
                self.entries = entries
        except FileNotFoundError:
            return
        except (OSError, ValueError, AttributeError) as err:
            self.problem = f"the cache {self.path} cannot be read ({err}); it is ignored"

    def get(self, name: str, definition_hash: str) -> CachedValue | None:
        entry = self.entries.get(name)
        if not entry or entry.get("spec") != definition_hash:
            return None
        try:
            return CachedValue(
                value=str(entry["value"]),
                resolved_at=float(entry["resolved_at"]),
                instances=tuple(Instance.from_json(i) for i in entry.get("instances", [])),
                chosen=Instance.from_json(entry["chosen"]) if entry.get("chosen") else None,
                datacenter=entry.get("datacenter"),
                data=entry.get("data"),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def remember(self, resolved: Resolved, definition_hash: str, now: float) -> None:
        """Keep a value that came from Consul (the time is kept only when the value itself changed)."""
        if resolved.source != "consul" or resolved.value is None:
            return
        previous = self.entries.get(resolved.name)
        entry = {
            "spec": definition_hash,
            "value": resolved.value,
            "resolved_at": now,
            "datacenter": resolved.datacenter,
            "chosen": resolved.chosen.to_json() if resolved.chosen else None,
            "instances": [i.to_json() for i in resolved.instances],
            "data": resolved.data,
        }
        unchanged = previous is not None and {**previous, "resolved_at": now} == entry
        if unchanged and previous is not None and now - float(previous.get("resolved_at", 0)) < 60:
            return  # unchanged and confirmed less than a minute ago: no write
        self.entries[resolved.name] = entry
        self.dirty = True

    def save(self) -> str | None:
        """Write the cache if anything changed; return a problem to report instead of raising."""
        if self.path is None or not self.dirty:
            return None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path, json.dumps({"version": 1, "entries": self.entries}, indent=1), mode=0o600)
        except (OSError, OutputError) as err:
            return f"the cache {self.path} cannot be written ({err}); values still came out right"
        self.dirty = False
        return None
