"""Checks that span several places of a manifest set, each problem reported at its own ``file:line:col``.

- a service id declared twice (also across files, after defaults and the default id are applied);
- a KV key declared twice: in ``seed`` and ``enforce``, or by two files (after the prefix is applied);
- a KV key under the runner's own state prefix;
- an output file declared twice (dependency names are scoped to their own file, whose outputs render them);
- ``include_warning`` or ``filter`` given for a KV dependency is refused by the schema already.

Pure: works on loaded manifests only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from manifest_runner.errors import Problem
from manifest_runner.manifest.model import effective_service_id
from manifest_runner.marks import STATE_PREFIX

if TYPE_CHECKING:
    from manifest_runner.manifest.loaded import LoadedManifest
    from manifest_runner.manifest.locations import PathKey

K = TypeVar("K")


@dataclass(frozen=True, slots=True)
class _Place:
    manifest: LoadedManifest
    path: PathKey

    def where(self) -> str:
        line, col = self.manifest.positions.of_key(self.path)
        return f"{self.manifest.file}:{line}:{col}"

    def problem(self, message: str) -> Problem:
        return self.manifest.positions.problem(self.path, message, at_key=True)


def consistency_problems(manifests: Iterable[LoadedManifest], state_prefix: str = STATE_PREFIX) -> list[Problem]:
    """Every cross-place problem in the set, in file order."""
    problems: list[Problem] = []
    service_ids: dict[str, _Place] = {}
    kv_keys: dict[str, _Place] = {}
    output_files: dict[Path, _Place] = {}
    for loaded in manifests:
        manifest = loaded.manifest
        for index, service in enumerate(manifest.services):
            service_id = effective_service_id(service, manifest.defaults)
            place = _Place(loaded, ("services", index, "id") if service.id else ("services", index))
            _claim(service_ids, service_id, place, f"service id {service_id!r}", problems)
        for section in ("seed", "enforce"):
            for key in getattr(manifest.kv, section):
                full = manifest.kv.prefix + key
                place = _Place(loaded, ("kv", section, key))
                if full.startswith(state_prefix):
                    problems.append(
                        place.problem(f"KV key {full!r} is under {state_prefix!r}, the runner's own records")
                    )
                _claim(kv_keys, full, place, f"KV key {full!r}", problems)
        for field in ("env_file", "json_file", "yaml_file"):
            target = getattr(manifest.outputs, field)
            if target is not None:
                resolved = (loaded.folder / target).resolve()
                place = _Place(loaded, ("outputs", field))
                _claim(output_files, resolved, place, f"output file {str(resolved)!r}", problems)
    return problems


def _claim(seen: dict[K, _Place], key: K, place: _Place, what: str, problems: list[Problem]) -> None:
    first = seen.get(key)
    if first is None:
        seen[key] = place
    else:
        problems.append(place.problem(f"{what} is declared twice; first at {first.where()}"))
