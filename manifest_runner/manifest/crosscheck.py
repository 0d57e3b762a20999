"""Checks that span several places of a manifest set, each problem reported at its own ``file:line:col``.

- a service id declared twice (also across files, after defaults and the default id are applied);
- a KV key declared twice: in ``seed`` and ``enforce``, or by two files (after the prefix is applied);
- a KV key under the runner's own state prefix;
- an output file declared twice, templates' destinations included (dependency names are scoped to their own file,
  whose outputs render them);
- a script or docker check in a manifest without ``allow_script_checks: true``;
- a variable of ``env_from: {service}`` that is also a dependency's name;
- ``include_warning`` or ``filter`` given for a KV dependency is refused by the schema already.

Pure: works on loaded manifests only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from manifest_runner.errors import Problem
from manifest_runner.manifest.checks import SCRIPT_CHECKS
from manifest_runner.manifest.model import EnvFromService, effective_service_id, env_from_stem
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
        _services(loaded, service_ids, problems)
        _keys(loaded, kv_keys, state_prefix, problems)
        _outputs(loaded, output_files, problems)
        _env_from(loaded, problems)
    return problems


def _services(loaded: LoadedManifest, service_ids: dict[str, _Place], problems: list[Problem]) -> None:
    manifest = loaded.manifest
    for index, service in enumerate(manifest.services):
        service_id = effective_service_id(service, manifest.defaults)
        place = _Place(loaded, ("services", index, "id") if service.id else ("services", index))
        _claim(service_ids, service_id, place, f"service id {service_id!r}", problems)
        for number, check in enumerate(service.checks):
            if isinstance(check, SCRIPT_CHECKS) and not manifest.allow_script_checks:
                problems.append(
                    _Place(loaded, ("services", index, "checks", number)).problem(
                        "a script or docker check runs commands on the agent's host; "
                        "set allow_script_checks: true in the manifest to allow it"
                    )
                )


def _keys(loaded: LoadedManifest, kv_keys: dict[str, _Place], state_prefix: str, problems: list[Problem]) -> None:
    manifest = loaded.manifest
    for section in ("seed", "enforce"):
        for key in getattr(manifest.kv, section):
            full = manifest.kv.prefix + key
            place = _Place(loaded, ("kv", section, key))
            if full.startswith(state_prefix):
                problems.append(place.problem(f"KV key {full!r} is under {state_prefix!r}, the runner's own records"))
            _claim(kv_keys, full, place, f"KV key {full!r}", problems)


def _outputs(loaded: LoadedManifest, output_files: dict[Path, _Place], problems: list[Problem]) -> None:
    outputs = loaded.manifest.outputs
    targets: list[tuple[str, PathKey]] = [
        (getattr(outputs, field), ("outputs", field))
        for field in ("env_file", "json_file", "yaml_file")
        if getattr(outputs, field) is not None
    ]
    targets += [
        (template.destination, ("outputs", "templates", number, "destination"))
        for number, template in enumerate(outputs.templates)
    ]
    for target, path in targets:
        resolved = (loaded.folder / target).resolve()
        _claim(output_files, resolved, _Place(loaded, path), f"output file {str(resolved)!r}", problems)


def _env_from(loaded: LoadedManifest, problems: list[Problem]) -> None:
    manifest = loaded.manifest
    for number, entry in enumerate(manifest.env_from):
        if not isinstance(entry, EnvFromService):
            continue
        stem = env_from_stem(entry)
        for variable in (f"{stem}_ADDRESS", f"{stem}_PORT", f"{stem}_URL"):
            if variable in manifest.dependencies:
                problems.append(
                    _Place(loaded, ("env_from", number)).problem(
                        f"env_from gives {variable}, which is also a dependency's name"
                    )
                )


def _claim(seen: dict[K, _Place], key: K, place: _Place, what: str, problems: list[Problem]) -> None:
    first = seen.get(key)
    if first is None:
        seen[key] = place
    else:
        problems.append(place.problem(f"{what} is declared twice; first at {first.where()}"))
