"""The running outputs: dependencies resolved again when they may have changed, files rewritten when a value did.

Keeps one resolver per owner across passes (so that round_robin advances and a random or weighted pick stays on
its instance while it stays healthy) and the last outcome of every dependency; only the named dependencies cost a
request, and a manifest's outputs are rewritten only when one of its values changed. A manifest with a required
dependency that resolved from nothing keeps its files as they are. With ``outputs.wait``, the files are written
once the changes settle (the first write of a run is at once: a booting service needs its file).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from pathlib import Path

from manifest_runner.consul.client import ConsulClient
from manifest_runner.errors import ManifestRunnerError
from manifest_runner.manifest.loader import LoadedManifest, ManifestSet
from manifest_runner.resolve.delivery import Resolution, child_environment, resolve_set, write_outputs
from manifest_runner.resolve.resolver import Budget, Resolver
from manifest_runner.resolve.result import Resolved
from manifest_runner.run.dependencies import split_key
from manifest_runner.run.telemetry import Metrics
from manifest_runner.run.templates import RunningTemplates, template_of
from manifest_runner.util.durations import parse_duration
from manifest_runner.util.quiescence import Quiescence

log = logging.getLogger("consul_manifest.run")


class DependencyOutputs:
    def __init__(
        self,
        client: ConsulClient | None,
        cache_dir: Path | None,
        budget: float,
        metrics: Metrics,
        *,
        offline_reason: str = "Consul was not asked (--offline)",
        pass_token: bool = False,
        pristine: bool = False,
    ) -> None:
        self.client = client
        self.offline_reason = offline_reason
        self.pass_token = pass_token
        self.pristine = pristine
        self.cache_dir = cache_dir
        self.budget = budget
        self.metrics = metrics
        self.resolvers: dict[str, Resolver] = {}
        self.outcomes: dict[tuple[Path, str], Resolved] = {}
        self.pending: dict[Path, tuple[LoadedManifest, Quiescence]] = {}
        self.written: set[Path] = set()
        self.templates = RunningTemplates(client, cache_dir, on_render=self._template_rendered)

    def keep_only(self, manifests: ManifestSet) -> None:
        """Forget the outcomes of manifests that are no longer in force."""
        files = {m.file for m in manifests.manifests}
        self.outcomes = {k: v for k, v in self.outcomes.items() if k[0] in files}
        self.pending = {f: p for f, p in self.pending.items() if f in files}
        self.templates.keep_only(manifests)

    def refresh(self, manifests: ManifestSet, keys: Iterable[str] | None) -> bool:
        """Resolve again the dependencies named by ``keys`` (all when None); rewrite the outputs of the manifests
        where a value changed. Returns whether any value changed."""
        only: dict[Path, set[str]] | None = None
        templates: set[tuple[Path, int]] | None = None
        if keys is not None:
            only, templates = {}, set()
            for key in keys:
                template = template_of(key)
                if template is not None:
                    templates.add(template)
                    continue
                file, name = split_key(key)
                only.setdefault(file, set()).add(name)
        resolution = resolve_set(
            manifests,
            self.client,
            self.cache_dir,
            Budget.of(self.budget),
            self.resolvers,
            only=only,
            offline_reason=self.offline_reason,
        )
        for problem in resolution.cache_problems:
            log.warning("%s", problem)
        changed = [
            m
            for m in manifests.manifests
            if m.file in resolution.by_manifest and self._record(m.file, resolution.by_manifest[m.file])
        ]
        now = time.monotonic()
        if templates is not None:
            templates |= self.templates.of_manifests({m.file for m in changed})
        if templates is None or templates:
            self.templates.changed(templates, now, self.variables())
        for loaded in changed:
            wait = loaded.manifest.outputs.wait
            if wait is None or loaded.file not in self.written:
                self.pending.pop(loaded.file, None)
                self._render(loaded)
                continue
            _, quiet = self.pending.get(loaded.file) or (loaded, None)
            if quiet is None:
                low = parse_duration(wait.min)
                quiet = Quiescence(low, parse_duration(wait.max) if wait.max else low * 4)
            quiet.changed(now)
            self.pending[loaded.file] = (loaded, quiet)
        return bool(changed)

    def deadline(self) -> float | None:
        """When the next settled output is due (monotonic seconds), if any is pending."""
        deadlines = [d for _, quiet in self.pending.values() if (d := quiet.deadline()) is not None]
        if (template := self.templates.deadline()) is not None:
            deadlines.append(template)
        return min(deadlines) if deadlines else None

    def flush(self, now: float) -> None:
        """Write the pending outputs whose changes have settled."""
        for file, (loaded, quiet) in list(self.pending.items()):
            if quiet.due(now):
                del self.pending[file]
                self._render(loaded)
        self.templates.flush(now, self.variables())

    def _template_rendered(self, _path: Path, changed: bool) -> None:
        if changed:
            self.metrics.inc("consul_manifest_renders_total")

    def variables(self) -> dict[Path, dict[str, str]]:
        """Each manifest's resolved values by name (what its templates see)."""
        found: dict[Path, dict[str, str]] = {}
        for (file, name), item in self.outcomes.items():
            if item.value is not None:
                found.setdefault(file, {})[name] = item.value
        return found

    def failed(self) -> list[Resolved]:
        return [item for item in self.outcomes.values() if item.failed]

    def environment(self) -> dict[str, str]:
        """The environment of a supervised command: the current one with every resolved value set."""
        values = [item for item in self.outcomes.values() if item.value is not None]
        return child_environment(values, pass_token=self.pass_token, pristine=self.pristine)

    def _record(self, path: Path, items: list[Resolved]) -> bool:
        changed = False
        for group in {item.group for item in items if item.group}:  # an env_from entry's variables, replaced whole
            gone = [k for k, v in self.outcomes.items() if k[0] == path and v.group == group]
            fresh = {item.name for item in items if item.group == group}
            for key in gone:
                if key[1] not in fresh:
                    del self.outcomes[key]
                    changed = True
        for item in items:
            self.metrics.inc("consul_manifest_resolutions_total", source=item.source)
            previous = self.outcomes.get((path, item.name))
            value_changed = previous is None or previous.value != item.value
            self.metrics.dependency(path.name, item.name, item.source, time.time() if value_changed else None)
            if not item.same_outcome(previous):
                changed = True
                if item.source != "consul":
                    log.warning("%s: %s", item.name, item.explain())
                elif previous is not None:
                    log.info("%s: %s (%s)", item.name, item.value, item.source)
            self.outcomes[(path, item.name)] = item
        return changed

    def _render(self, loaded: LoadedManifest) -> None:
        items = sorted(
            (item for (file, _), item in self.outcomes.items() if file == loaded.file), key=lambda item: item.name
        )
        self.written.add(loaded.file)
        failed = [item for item in items if item.failed]
        if failed:
            for item in failed:
                log.error("dependency %s: no value (%s); %s is left as it is", item.name, item.reason, loaded.file)
            return
        try:
            for path, written in write_outputs(ManifestSet((loaded,)), Resolution({loaded.file: items})):
                if written:
                    self.metrics.inc("consul_manifest_renders_total")
                    log.info("wrote %s", path)
        except ManifestRunnerError as err:
            log.error("%s", err)
