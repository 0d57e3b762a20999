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
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from manifest_runner.consul.payloads import Instance, PayloadError
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


MAX_CACHE_BYTES = 16 * 1024 * 1024
CLOCK_SKEW = 60.0
"""A cached value may be this many seconds "in the future" (clocks move); any later is not trusted."""


class LastKnownGood:
    """The cache of one owner. Load once, ``get`` and ``remember`` as needed, then ``save``.

    The file is untrusted input like any other: it is read within a size limit, and anything of an unexpected shape
    (not JSON, nested too deep, an entry of the wrong type, a time in the future) is dropped with one warning
    (``problem``). A cache never stops a render."""

    def __init__(self, folder: Path | None, owner: str, clock: Callable[[], float] = time.time) -> None:
        self.path = folder / f"{owner}.json" if folder is not None else None
        self.entries: dict[str, dict[str, Any]] = {}
        self.dirty = False
        self.problem: str | None = None
        self.clock = clock
        if self.path is not None:
            self._load()

    def _load(self) -> None:
        if self.path is None:
            return
        try:
            with self.path.open("rb") as handle:
                data = handle.read(MAX_CACHE_BYTES + 1)
        except FileNotFoundError:
            return
        except OSError as err:
            self.problem = f"the cache {self.path} cannot be read ({err.strerror or err}); it is ignored"
            return
        if len(data) > MAX_CACHE_BYTES:
            self.problem = f"the cache {self.path} is larger than {MAX_CACHE_BYTES:,} bytes; it is ignored"
            return
        try:
            parsed = json.loads(data.decode("utf-8"))
        except (ValueError, RecursionError) as err:
            self.problem = f"the cache {self.path} is not valid JSON ({type(err).__name__}); it is ignored"
            return
        entries = parsed.get("entries") if isinstance(parsed, dict) else None
        if not isinstance(entries, dict):
            self.problem = f"the cache {self.path} is not a consul-manifest cache; it is ignored"
            return
        kept = {name: entry for name, entry in entries.items() if self._valid(entry)}
        if len(kept) != len(entries):
            dropped = len(entries) - len(kept)
            self.problem = f"the cache {self.path} holds {dropped} entries of an unexpected shape; they are ignored"
        self.entries = kept

    def _valid(self, entry: Any) -> bool:
        try:
            _cached(entry, self.clock())
        except (KeyError, TypeError, ValueError, RecursionError):
            return False
        return True

    def get(self, name: str, definition_hash: str) -> CachedValue | None:
        entry = self.entries.get(name)
        if not entry or entry.get("spec") != definition_hash:
            return None
        try:
            return _cached(entry, self.clock())
        except (KeyError, TypeError, ValueError, RecursionError):
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
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_atomic(self.path, json.dumps({"version": 1, "entries": self.entries}, indent=1), mode=0o600)
        except (OSError, OutputError) as err:
            return f"the cache {self.path} cannot be written ({err}); values still came out right"
        self.dirty = False
        return None


def _cached(entry: Any, now: float) -> CachedValue:
    """An entry, checked: raises KeyError, TypeError or ValueError for any unexpected shape."""
    if not isinstance(entry, dict) or not isinstance(entry["spec"], str):
        raise TypeError("not an entry")
    value, resolved_at, datacenter = entry["value"], entry["resolved_at"], entry.get("datacenter")
    if not isinstance(value, str) or "\x00" in value:
        raise TypeError("value")
    if isinstance(resolved_at, bool) or not isinstance(resolved_at, int | float) or not math.isfinite(resolved_at):
        raise TypeError("resolved_at")
    if resolved_at > now + CLOCK_SKEW:
        raise ValueError("resolved in the future")
    if datacenter is not None and not isinstance(datacenter, str):
        raise TypeError("datacenter")
    instances = entry.get("instances") or []
    if not isinstance(instances, list):
        raise TypeError("instances")
    try:
        return CachedValue(
            value=value,
            resolved_at=float(resolved_at),
            instances=tuple(Instance.from_json(i) for i in instances),
            chosen=Instance.from_json(entry["chosen"]) if entry.get("chosen") else None,
            datacenter=datacenter,
            data=entry.get("data"),
        )
    except PayloadError as err:
        raise ValueError(str(err)) from None
