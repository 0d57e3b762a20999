"""The running templates of ``run``: rendered at start, again when what they read changes (their recorded reads
are watched: :meth:`RunningTemplates.watches`) or when the manifest's dependencies change, once the changes settle
(``wait``); the command runs once per change. A template that fails keeps its file and is logged; the runner goes
on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from manifest_runner.consul.base import Freshness
from manifest_runner.consul.client import ConsulClient
from manifest_runner.manifest.loader import LoadedManifest, ManifestSet
from manifest_runner.manifest.model import KVDependency, ServiceDependency
from manifest_runner.resolve.delivery import agent_node
from manifest_runner.resolve.resolver import freshness_of
from manifest_runner.run.dependencies import CatalogWatch, Watched, watch_freshness
from manifest_runner.util.durations import parse_duration
from manifest_runner.util.quiescence import Quiescence

log = logging.getLogger("consul_manifest.run")

MARK = "@template:"


@dataclass
class _State:
    loaded: LoadedManifest
    number: int
    quiet: Quiescence | None = None
    rendered: bool = False
    calls: frozenset[Any] = frozenset()


@dataclass
class RunningTemplates:
    client: ConsulClient | None
    cache_dir: Path | None
    on_render: Callable[[Path, bool], None] = lambda path, changed: None
    states: dict[tuple[Path, int], _State] = field(default_factory=dict)
    remembered: dict[str, dict[str, Any]] = field(default_factory=dict)
    node: dict[str, str] | None = None

    def keep_only(self, manifests: ManifestSet) -> None:
        wanted = {(m.file, n): m for m in manifests.manifests for n in range(len(m.manifest.outputs.templates))}
        self.states = {k: v for k, v in self.states.items() if k in wanted}
        for key, loaded in wanted.items():
            state = self.states.get(key)
            if state is None or state.loaded is not loaded:
                self.states[key] = _State(loaded, key[1], calls=state.calls if state else frozenset())

    def changed(self, keys: set[tuple[Path, int]] | None, now: float, variables: Mapping[Path, dict[str, str]]) -> None:
        """Templates whose data may have changed (None: all): rendered now, or once changes settle."""
        for key, state in sorted(self.states.items(), key=lambda item: (str(item[0][0]), item[0][1])):
            if keys is not None and key not in keys:
                continue
            template = state.loaded.manifest.outputs.templates[state.number]
            if template.wait is not None and state.rendered:
                if state.quiet is None:
                    low = parse_duration(template.wait.min)
                    state.quiet = Quiescence(low, parse_duration(template.wait.max) if template.wait.max else low * 4)
                state.quiet.changed(now)
                continue
            self._render(state, variables.get(state.loaded.file, {}))

    def of_manifests(self, files: set[Path]) -> set[tuple[Path, int]]:
        return {key for key in self.states if key[0] in files}

    def deadline(self) -> float | None:
        deadlines = [d for s in self.states.values() if s.quiet is not None and (d := s.quiet.deadline()) is not None]
        return min(deadlines) if deadlines else None

    def flush(self, now: float, variables: Mapping[Path, dict[str, str]]) -> None:
        for state in self.states.values():
            if state.quiet is not None and state.quiet.due(now):
                self._render(state, variables.get(state.loaded.file, {}))

    def watches(self) -> dict[str, Watched]:
        """What the templates read, as watches: key ``<file>::@template:<n>``."""
        found: dict[str, Watched] = {}
        for (file, number), state in self.states.items():
            freshness = watch_freshness(state.loaded.manifest.reads)
            for index, call in enumerate(sorted(state.calls)):
                watched = _as_watch(call, freshness)
                if watched is not None:
                    found[f"{file}::{MARK}{number}#{index}"] = watched
        return found

    def _render(self, state: _State, variables: dict[str, str]) -> None:
        from manifest_runner.resolve.templates import TemplateData, render_one, save_remembered

        if self.node is None:
            self.node = agent_node(self.client)
        owner = state.loaded.owner
        remembered = self.remembered.setdefault(owner, self._load(owner))
        data = TemplateData(self.client, freshness_of(state.loaded.manifest.reads), remembered)
        template = state.loaded.manifest.outputs.templates[state.number]
        outcome = render_one(template, state.loaded.folder, data, variables, self.node)
        state.rendered = True
        state.calls = outcome.calls
        for fallback in outcome.fallbacks:
            log.warning("%s: %s", outcome.destination, fallback)
        if outcome.error is not None:
            log.error("%s: not rendered (the file is left as it is): %s", outcome.destination, outcome.error)
            return
        if outcome.changed:
            log.info("wrote %s", outcome.destination)
        self.on_render(outcome.destination, outcome.changed)
        save_remembered(self.cache_dir, owner, remembered)

    def _load(self, owner: str) -> dict[str, Any]:
        from manifest_runner.resolve.templates import load_remembered

        return load_remembered(self.cache_dir, owner)


def template_of(key: str) -> tuple[Path, int] | None:
    """``<file>::@template:<n>#<i>`` -> (file, n); None for a dependency's key."""
    file, _, name = key.rpartition("::")
    if not name.startswith(MARK):
        return None
    return Path(file), int(name[len(MARK) :].split("#", 1)[0])


def _as_watch(call: Any, freshness: Freshness) -> Watched | None:
    try:
        if call.kind == "service":
            dependency: Any = ServiceDependency(
                service=call.name, datacenters=[call.datacenter] if call.datacenter else None
            )
        elif call.kind == "services":
            return CatalogWatch(call.datacenter), freshness
        else:
            dependency = KVDependency(kv=call.name, datacenter=call.datacenter)
    except ValidationError:
        return None  # a read the watches cannot express (the resync covers it)
    return dependency, freshness
