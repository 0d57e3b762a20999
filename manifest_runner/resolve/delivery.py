"""Container boot: resolve a manifest set's dependencies once and deliver them (``render``, ``exec``).

Each manifest's dependencies go to its own ``outputs`` (relative to its folder); ``--output`` puts every
dependency of every manifest in one file instead. Nothing is written when a required dependency resolved from
nothing: a half-filled env file is worse than none.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from manifest_runner.consul.client import ConsulClient
from manifest_runner.errors import ConsulError, ResolveError
from manifest_runner.manifest.loader import LoadedManifest, ManifestSet
from manifest_runner.resolve.cache import LastKnownGood
from manifest_runner.resolve.envfrom import all_dependencies, expand
from manifest_runner.resolve.renderers import format_for, render
from manifest_runner.resolve.resolver import Budget, Resolver, freshness_of
from manifest_runner.resolve.result import Resolved
from manifest_runner.resolve.writer import write_atomic


@dataclass
class Resolution:
    """The dependencies of every manifest of a set, resolved, with what to tell the user."""

    by_manifest: dict[Path, list[Resolved]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    """Values that did not come from Consul, and cache problems: what render and exec print."""
    cache_problems: list[str] = field(default_factory=list)
    """The cache could not be read or written (also in ``warnings``): what run logs as a warning."""

    @property
    def all(self) -> list[Resolved]:
        return [r for items in self.by_manifest.values() for r in items]

    @property
    def failed(self) -> list[Resolved]:
        return [r for r in self.all if r.failed]


def resolve_set(
    manifest_set: ManifestSet,
    client: ConsulClient | None,
    cache_dir: Path | None,
    budget: Budget,
    resolvers: dict[str, Resolver] | None = None,
    *,
    only: Mapping[Path, set[str]] | None = None,
    offline_reason: str = "Consul was not asked (--offline)",
) -> Resolution:
    """Resolve every manifest's dependencies within one budget; the cache is per owner. With ``only``, just the
    named dependencies of the manifests it names (the others are not in the result)."""
    resolution = Resolution()
    resolvers = resolvers if resolvers is not None else {}
    for owner in manifest_set.owners:
        selected = [m for m in manifest_set.of_owner(owner) if only is None or only.get(m.file)]
        if not selected:
            continue
        resolver = resolvers.get(owner)
        if resolver is None:
            resolver = resolvers[owner] = Resolver(
                client, LastKnownGood(cache_dir, owner), offline_reason=offline_reason
            )
            if resolver.cache.problem:  # said once, when the cache is first read
                resolution.cache_problems.append(resolver.cache.problem)
        for loaded in selected:
            names = None if only is None else only[loaded.file]
            every = all_dependencies(loaded.manifest)
            dependencies = {n: d for n, d in every.items() if names is None or n in names}
            resolved = resolver.resolve(dependencies, budget, freshness_of(loaded.manifest.reads))
            resolution.by_manifest[loaded.file] = expand(loaded.manifest, resolved)
        problem = resolver.cache.save()
        if problem:
            resolution.cache_problems.append(problem)
    resolution.warnings.extend(resolution.cache_problems)
    resolution.warnings.extend(
        f"{item.name}: {item.explain()}" for item in resolution.all if item.source != "consul" and not item.failed
    )
    return resolution


def require_all(resolution: Resolution) -> None:
    """Raise :class:`ResolveError` naming every required dependency that resolved from nothing."""
    failed = resolution.failed
    if failed:
        details = "; ".join(f"{r.name}: {r.reason or 'no value'} (and no fallback)" for r in failed)
        raise ResolveError(f"{len(failed)} dependenc{'y' if len(failed) == 1 else 'ies'} unresolved: {details}")


def merged(resolution: Resolution) -> list[Resolved]:
    """Every dependency of the set as one list; the same name from two manifests must mean the same value."""
    by_name: dict[str, Resolved] = {}
    for item in resolution.all:
        other = by_name.get(item.name)
        if other is not None and other.value != item.value:
            raise ResolveError(
                f"{item.name} is declared by several manifests with different values; render them one at a time"
            )
        by_name[item.name] = item
    return [by_name[name] for name in sorted(by_name)]


def output_targets(loaded: LoadedManifest) -> list[tuple[Path, str]]:
    outputs = loaded.manifest.outputs
    targets = [(outputs.env_file, "env"), (outputs.json_file, "json"), (outputs.yaml_file, "yaml")]
    return [(loaded.folder / path, fmt) for path, fmt in targets if path is not None]


def write_outputs(
    manifest_set: ManifestSet, resolution: Resolution, *, only_changed: bool = True
) -> list[tuple[Path, bool]]:
    """Each manifest's own outputs; returns (path, rewritten) for each. Manifests without outputs are skipped."""
    written: list[tuple[Path, bool]] = []
    for loaded in manifest_set.manifests:
        resolved = resolution.by_manifest.get(loaded.file, [])
        outputs = loaded.manifest.outputs
        mode = int(outputs.mode, 8) if outputs.mode else None
        for path, fmt in output_targets(loaded):
            changed = write_atomic(path, render(resolved, fmt), mode, follow_any_link=outputs.follow_symlinks)
            written.append((path, changed or not only_changed))
    return written


def render_templates(
    manifest_set: ManifestSet,
    resolution: Resolution,
    client: ConsulClient | None,
    cache_dir: Path | None,
    *,
    run_commands: bool = True,
) -> list[Any]:
    """Every manifest's templates, rendered once (``render``): a list of ``templates.Rendered``."""
    if not any(m.manifest.outputs.templates for m in manifest_set.manifests):
        return []
    from manifest_runner.resolve.templates import (  # Jinja2 only when there are templates
        TemplateData,
        load_remembered,
        render_one,
        save_remembered,
    )

    node = agent_node(client)
    outcomes = []
    for owner in manifest_set.owners:
        remembered = load_remembered(cache_dir, owner)
        for loaded in manifest_set.of_owner(owner):
            variables = {r.name: r.value for r in resolution.by_manifest.get(loaded.file, []) if r.value is not None}
            data = TemplateData(client, freshness_of(loaded.manifest.reads), remembered)
            for template in loaded.manifest.outputs.templates:
                outcomes.append(render_one(template, loaded.folder, data, variables, node, run_command=run_commands))
        save_remembered(cache_dir, owner, remembered)
    return outcomes


def agent_node(client: ConsulClient | None) -> dict[str, str]:
    """What ``node()`` gives a template: the agent's node name and datacenter (empty when Consul is away)."""
    if client is None:
        return {"name": "", "datacenter": ""}
    try:
        info = client.agent_self()
    except ConsulError:
        return {"name": "", "datacenter": ""}
    return {"name": info.node_name, "datacenter": info.datacenter}


def write_one(resolution: Resolution, target: str, fmt: str | None, echo: Callable[[str], None]) -> bool:
    """All dependencies into one file (``-``: standard output) in ``fmt`` (default: from the file name)."""
    items = merged(resolution)
    if target == "-":
        echo(render(items, fmt or "env"))
        return True
    return write_atomic(target, render(items, fmt or format_for(target)), follow_any_link=True)  # chosen explicitly


TOKEN_VARIABLES = ("CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE")


def child_environment(
    resolved: Sequence[Resolved],
    base: Mapping[str, str] | None = None,
    *,
    pass_token: bool = False,
    pristine: bool = False,
) -> dict[str, str]:
    """The environment of a child: the current one, with every resolved value set (values win). Our own ACL token
    is not passed on unless asked (``--pass-token``): the application seldom needs Consul's credentials.
    ``pristine`` (envconsul's): only the resolved values."""
    env = {} if pristine else dict(os.environ if base is None else base)
    if not pass_token:
        for name in TOKEN_VARIABLES:
            env.pop(name, None)
    env.update({r.name: r.value for r in resolved if r.value is not None})
    return env
