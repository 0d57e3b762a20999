"""envconsul's way (``env_from``): one variable per key under a KV prefix, and ``<NAME>_ADDRESS``, ``_PORT`` and
``_URL`` for a service (pure).

Each entry is resolved as a dependency of its own (named ``@env_from:<n>``: the same fallback chain, cache and
watches as any other), then expanded into its variables. A key's name becomes a variable name the way envconsul
does it: the path under the prefix with ``/`` as ``_``, any other character that cannot be in a name as ``_``, then
the entry's ``prefix`` and, with ``upcase``, upper case.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

from manifest_runner.manifest.model import (
    Dependency,
    EnvFromKV,
    EnvFromService,
    KVDependency,
    Manifest,
    ServiceDependency,
    env_from_stem,
)
from manifest_runner.resolve.result import Resolved

MARK = "@env_from:"


def all_dependencies(manifest: Manifest) -> dict[str, Dependency]:
    """The manifest's dependencies and one for each ``env_from`` entry."""
    found: dict[str, Dependency] = dict(manifest.dependencies)
    for number, entry in enumerate(manifest.env_from):
        found[f"{MARK}{number}"] = as_dependency(entry)
    return found


def as_dependency(entry: EnvFromKV | EnvFromService) -> Dependency:
    if isinstance(entry, EnvFromKV):
        return KVDependency(kv=entry.kv, datacenter=entry.datacenter, optional=entry.optional, max_age=entry.max_age)
    return ServiceDependency(
        service=entry.service,
        tag=entry.tag,
        datacenters=entry.datacenters,
        strategy=entry.strategy,
        include_warning=entry.include_warning,
        optional=entry.optional,
        max_age=entry.max_age,
    )


def variable_name(key: str, prefix: str = "", upcase: bool = False) -> str:
    """``db/pool-size`` -> ``db_pool_size`` (``APP_DB_POOL_SIZE`` with prefix ``APP_`` and upcase)."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", key.strip("/").replace("/", "_"))
    if name and name[0].isdigit():
        name = f"_{name}"
    name = prefix + name
    return name.upper() if upcase else name


def expand(manifest: Manifest, items: list[Resolved]) -> list[Resolved]:
    """The resolved list with each ``env_from`` entry replaced by its variables (grouped, to be replaced together
    next time). An entry that resolved from nothing stays as one failed (or optional) item, named after it."""
    out: list[Resolved] = []
    for item in items:
        if not item.name.startswith(MARK):
            out.append(item)
            continue
        number = int(item.name[len(MARK) :])
        entry = manifest.env_from[number]
        variables = _variables(entry, item)
        if variables is None:
            label = f"env_from[{number}] ({'kv ' + entry.kv if isinstance(entry, EnvFromKV) else entry.service})"
            if not item.optional:
                out.append(replace(item, name=label, group=item.name))
            continue
        out.extend(
            replace(item, name=name, value=value, group=item.name, data=None)
            for name, value in sorted(variables.items())
        )
    return out


def _variables(entry: EnvFromKV | EnvFromService, item: Resolved) -> dict[str, str] | None:
    if item.value is None:
        return None
    if isinstance(entry, EnvFromKV):
        data: Any = item.data
        if not isinstance(data, dict):
            return None
        return {
            variable_name(key, entry.prefix, entry.upcase): value if isinstance(value, str) else _compact(value)
            for key, value in data.items()
        }
    chosen = item.chosen
    if chosen is None:
        return None
    stem = env_from_stem(entry)
    return {
        f"{stem}_ADDRESS": chosen.address,
        f"{stem}_PORT": str(chosen.port),
        f"{stem}_URL": f"{entry.scheme}://{chosen.host}:{chosen.port}",
    }


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)
