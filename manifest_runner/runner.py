"""``consul-manifest run``: apply, then keep the owner's whole Consul footprint true and its outputs current.

One main loop owns every decision and every write; threads only watch and report, through one event queue:

- the manifest files (their folders are watched, so an editor's atomic save is seen), debounced. An invalid edit
  is reported and the last good manifests stay in force; a manifest file that disappears is an error, not "desired
  = empty" (SIGHUP accepts it, as an explicit reload);
- drift: blocking queries on this agent's services (``/v1/catalog/node-services/<node>``) and on the KV roots of
  the manifests. A dev agent that restarts empty makes those indexes go backwards: the next reconciliation puts
  every service and key back;
- the dependencies (:class:`DependencyWatch`, a bounded number of connections whatever their number): the changed
  ones are resolved again, and outputs are rewritten (atomically) only when a value changed;
- a full resync every ``resync`` seconds, as a safety net;
- TTL heartbeats from local probes, each in its own thread.

Consul unreachable: the runner keeps running, retries with capped exponential backoff and jitter, and converges as
soon as it is back. SIGHUP reloads the manifests; SIGTERM and SIGINT stop cleanly, deregistering the services whose
``on_exit`` is ``deregister`` and keeping the others; exit 0.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import signal
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from manifest_runner.boot import Resolution, child_environment, resolve_set, write_outputs
from manifest_runner.consul.client import ConsulClient
from manifest_runner.consul.observe import services_filter
from manifest_runner.consul.watch import BlockingLoop, DependencyWatch, kv_fetch, path_fetch, wait_ready
from manifest_runner.desired import desired_state
from manifest_runner.errors import ConsulError, ManifestError, ManifestRunnerError
from manifest_runner.heartbeat import Beat, beats_for
from manifest_runner.loader import LoadedManifest, ManifestSet, load_manifests
from manifest_runner.plan import PlanPolicy
from manifest_runner.reconcile import converge
from manifest_runner.resolve import Budget, Resolver
from manifest_runner.resolved import Resolved
from manifest_runner.state import DesiredState, kv_roots
from manifest_runner.status import Metrics, StatusServer
from manifest_runner.supervise import FORWARDED, Child, exit_code, signal_number

log = logging.getLogger("consul_manifest.run")


@dataclass
class RunOptions:
    prune: bool = False
    resync: float = 30.0
    dependency_resync: float = 300.0
    """Every this many seconds, every dependency is resolved again, whatever the watches said (one request each:
    with a thousand dependencies, that is a thousand requests, so it is rarer than the resync of the manifests)."""
    debounce: float = 0.05
    lock_timeout: float = 60.0
    budget: float = 5.0
    cache_dir: Path | None = None
    listen: str | None = None
    command: Sequence[str] | None = None
    reload_signal: str | None = None
    child_debounce: float = 1.0
    grace: float = 10.0
    backoff_start: float = 0.5
    backoff_cap: float = 30.0


@dataclass
class Health:
    converged: bool = False
    last_sync: float | None = None
    last_error: str | None = None
    started: float = field(default_factory=time.time)


class Runner:
    def __init__(self, manifests: ManifestSet, paths: Sequence[str], client: ConsulClient, options: RunOptions) -> None:
        self.paths = list(paths)
        self.client = client
        self.options = options
        self.events: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.metrics = Metrics()
        self.health = Health()
        self.manifests = manifests
        self.desired: dict[str, DesiredState] = {}
        self.resolvers: dict[str, Resolver] = {}
        self.outcomes: dict[tuple[Path, str], Resolved] = {}
        self.dependency_watch: DependencyWatch | None = None
        self.drift_loops: list[BlockingLoop] = []
        self.beats: list[Beat] = []
        self.child: Child | None = None
        self.child_env: dict[str, str] | None = None
        self.child_pending: float | None = None
        self.status: StatusServer | None = None
        self.retry_at: float | None = None
        self.backoff = options.backoff_start
        self.next_resync = time.monotonic() + options.resync
        self.next_dependency_resync = time.monotonic() + options.dependency_resync
        self.first_sync_done = False
        self.node: str | None = None
        self._stop_files = threading.Event()
        self._reported_conflicts: set[str] = set()

    # -- life cycle -------------------------------------------------------------------------------------------

    def run(self) -> int:
        for signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, *FORWARDED):
            signal.signal(signum, lambda number, _frame: self.events.put(("signal", number)))
        if self.options.listen:
            self.status = StatusServer(self.options.listen, self._health, self.metrics, self._gauges).start()
            log.info("status endpoint on http://%s (/healthz, /metrics)", self.status.address)
        threading.Thread(target=self._watch_files, name="manifest files", daemon=True).start()
        self._adopt(self.manifests)
        self._resolve(None)
        if self.options.command:
            self.child = Child(self.options.command, self.options.grace)
            self.child_env = child_environment(list(self.outcomes.values()))
            self.child.start(self.child_env)
        try:
            return self._loop()
        finally:
            self._shutdown_watches()
            if self.status is not None:
                self.status.stop()

    def _loop(self) -> int:
        while True:
            if self.child is not None and self.child.poll() is not None:
                code = exit_code(self.child.poll() or 0)
                log.info("the command exited with %d: stopping", code)
                self._on_exit()
                return code
            kinds, keys, signals = self._next_events()
            for number in signals:
                if number in (signal.SIGTERM, signal.SIGINT):
                    log.info("signal %d: stopping", number)
                    self._on_exit()
                    return 0 if self.child is None else exit_code(self.child.stop() or 0)
                if number == signal.SIGHUP:
                    kinds.add("reload")
                elif self.child is not None:
                    self.child.send(number)
            if keys:
                self._resolve(keys)  # first: a dependency's latency is the product; drift can wait a moment
            now = time.monotonic()
            if "files" in kinds or "reload" in kinds:
                self._reload(explicit="reload" in kinds)
            if "drift" in kinds or (self.retry_at is not None and now >= self.retry_at) or now >= self.next_resync:
                resync = now >= self.next_resync
                if resync:
                    self.next_resync = now + self.options.resync
                    self._check_node()
                self._converge_all()
                if resync and now >= self.next_dependency_resync:
                    self.next_dependency_resync = now + self.options.dependency_resync
                    self._resolve(None)
            self._child_update()

    def _next_events(self) -> tuple[set[str], set[str], list[int]]:
        """Wait for the next event, then take whatever else arrives within the debounce window."""
        deadlines = [self.next_resync]
        if self.retry_at is not None:
            deadlines.append(self.retry_at)
        if self.child_pending is not None:
            deadlines.append(self.child_pending + self.options.child_debounce)
        timeout = max(0.0, min(deadlines) - time.monotonic())
        if self.child is not None:
            timeout = min(timeout, 0.2)
        kinds: set[str] = set()
        keys: set[str] = set()
        signals: list[int] = []
        try:
            first = self.events.get(timeout=timeout)
        except queue.Empty:
            return kinds, keys, signals
        batch = [first, *self._drain()]
        kinds_seen = {kind for kind, _ in batch}
        if kinds_seen & {"files", "drift"} and "deps" not in kinds_seen:
            # edits and drift come in bursts (an editor's save, our own writes): gather them for a moment.
            # A dependency change alone is acted on at once: its latency is the product.
            end = time.monotonic() + self.options.debounce
            while True:
                try:
                    item = self.events.get(timeout=max(0.0, end - time.monotonic()))
                except queue.Empty:
                    break
                batch.append(item)
                if item[0] == "deps":
                    break  # a dependency changed: act now
        for kind, payload in batch:
            if kind == "deps":
                keys |= payload
            elif kind == "signal":
                signals.append(payload)
            else:
                kinds.add(kind)
        return kinds, keys, signals

    def _drain(self) -> list[tuple[str, Any]]:
        items = []
        while True:
            try:
                items.append(self.events.get_nowait())
            except queue.Empty:
                return items

    # -- manifests --------------------------------------------------------------------------------------------

    def _watch_files(self) -> None:
        from watchfiles import watch

        while not self._stop_files.is_set():
            folders = sorted({str(Path(p) if Path(p).is_dir() else Path(p).parent) for p in self.paths})
            try:
                for changes in watch(
                    *folders, stop_event=self._stop_files, debounce=50, step=50, recursive=False, raise_interrupt=False
                ):
                    if any(self._relevant(Path(changed)) for _, changed in changes):
                        self.events.put(("files", None))
            except OSError as err:  # a watched folder vanished: report, wait, try again
                log.error("watching %s: %s", ", ".join(folders), err)
                self._stop_files.wait(1.0)

    def _relevant(self, path: Path) -> bool:
        for given in self.paths:
            root = Path(given)
            if root.is_dir() and path.parent.resolve() == root.resolve() and path.suffix in (".yaml", ".yml"):
                return True
            if path.resolve() == root.resolve():
                return True
        return any(path.resolve() == m.file.resolve() for m in self.manifests.manifests)

    def _reload(self, *, explicit: bool) -> None:
        try:
            candidate = load_manifests(self.paths)
        except ManifestError as err:
            for problem in err.problems:
                log.error("invalid manifest, the last good one stays in force: %s", problem)
            self.metrics.inc("consul_manifest_sync_errors_total")
            return
        gone = {m.file for m in self.manifests.manifests} - {m.file for m in candidate.manifests}
        if gone and not explicit:
            log.error(
                "manifest file %s disappeared: the last good manifests stay in force (send SIGHUP to accept)",
                ", ".join(sorted(map(str, gone))),
            )
            return
        if candidate == self.manifests and not explicit:
            return
        log.info("manifests reloaded: %s", ", ".join(str(m.file) for m in candidate.manifests))
        self._adopt(candidate)
        self._resolve(None)

    def _adopt(self, manifests: ManifestSet) -> None:
        """Make ``manifests`` the ones in force: converge to them, then restart the drift and dependency watches
        and the heartbeats (after registering: a heartbeat updates a check that must exist)."""
        self.manifests = manifests
        self.desired = {
            owner: desired_state(owner, [m.manifest for m in manifests.of_owner(owner)]) for owner in manifests.owners
        }
        self.outcomes = {k: v for k, v in self.outcomes.items() if k[0] in {m.file for m in manifests.manifests}}
        self._shutdown_watches()
        self._start_watches()  # watch first: a change made while we converge is then seen, not lost
        self._converge_all()
        checks = [check for d in self.desired.values() for s in d.services for check in s.checks]
        self.beats = [beat.start() for beat in beats_for(self.client, checks, self._beat_result)]

    def _start_watches(self) -> None:
        def wake(kind: str) -> Any:
            return lambda _body: self.events.put((kind, None))

        def failed(name: str, err: BaseException) -> None:
            log.warning("watch %s: %s", name, err)

        self.node = self._read_node() or self.node
        if self.node is not None:
            self.drift_loops.append(
                BlockingLoop(
                    f"services of {self.node}",
                    self.client,
                    path_fetch(f"/v1/catalog/node-services/{self.node}"),
                    wake("drift"),
                    failed,
                ).start()
            )
        roots = kv_roots(e.key for d in self.desired.values() for e in d.kv)
        for root in roots:
            self.drift_loops.append(
                BlockingLoop(f"kv {root}", self.client, kv_fetch(root, None), wake("drift"), failed).start()
            )
        dependencies = {
            f"{m.file}::{name}": dep for m in self.manifests.manifests for name, dep in m.manifest.dependencies.items()
        }
        if dependencies:
            self.dependency_watch = DependencyWatch(
                self.client, dependencies, lambda keys: self.events.put(("deps", keys)), on_error=failed
            ).start()
        loops = [*self.drift_loops, *(self.dependency_watch.loops if self.dependency_watch else [])]
        if not wait_ready(loops):
            log.warning("some watches have no starting index yet; the resync will catch what they miss")

    def _shutdown_watches(self) -> None:
        for loop in self.drift_loops:
            loop.stop()
        self.drift_loops = []
        if self.dependency_watch is not None:
            self.dependency_watch.stop()
            self.dependency_watch = None
        for beat in self.beats:
            beat.stop()
        self.beats = []

    def _read_node(self) -> str | None:
        """The agent's node name (for the services watch), or None when the agent cannot say."""
        try:
            return str(self.client.agent_self().get("Config", {}).get("NodeName") or "") or None
        except ConsulError:
            return None

    def _check_node(self) -> None:
        """A different node name (the agent was replaced) restarts every watch on the new one."""
        node = self._read_node()
        if node is not None and self.node is not None and node != self.node:
            log.info("the agent's node is now %s (was %s)", node, self.node)
            self._adopt(self.manifests)

    def _beat_result(self, check_id: str, status: str, _output: str) -> None:
        self.metrics.inc("consul_manifest_heartbeats_total", status=status)

    # -- Consul -----------------------------------------------------------------------------------------------

    def _converge_all(self) -> None:
        policy = PlanPolicy(prune=self.options.prune, prune_services=True)
        ok = True
        for owner, desired in self.desired.items():
            self.metrics.inc("consul_manifest_syncs_total")
            try:
                outcome = converge(self.client, desired, policy, lock_timeout=self.options.lock_timeout)
            except ManifestRunnerError as err:
                ok = False
                self._failed(f"{owner}: {err}")
                continue
            conflicts = outcome.plan.conflicts
            if conflicts and outcome.report is None:
                ok = False
                text = "; ".join(f"{a.kind} {a.target}: {a.reason}" for a in conflicts)
                if text not in self._reported_conflicts:
                    self._reported_conflicts.add(text)
                    log.error("%s: not applied, conflicts: %s", owner, text)
                continue
            report = outcome.report
            if report is None:
                continue
            for result in report.results:
                if result.status == "done":
                    self.metrics.inc("consul_manifest_actions_total", op=result.action.op)
                    if self.first_sync_done:
                        self.metrics.inc("consul_manifest_drift_repaired_total")
                    log.info("%s: %s", owner, result.line())
            if report.error is not None:
                ok = False
                self._failed(f"{owner}: {report.error}")
        self.first_sync_done = True
        if ok:
            self.health.converged = True
            self.health.last_sync = time.time()
            self.health.last_error = None
            self.metrics.set("consul_manifest_last_sync_timestamp_seconds", self.health.last_sync)
            self.retry_at = None
            self.backoff = self.options.backoff_start
        self.metrics.set("consul_manifest_converged", 1.0 if self.health.converged else 0.0)

    def _failed(self, message: str) -> None:
        self.metrics.inc("consul_manifest_sync_errors_total")
        self.health.converged = False
        self.health.last_error = message
        delay = self.backoff * (0.5 + random.random())  # noqa: S311 - jitter
        self.retry_at = time.monotonic() + delay
        self.backoff = min(self.backoff * 2, self.options.backoff_cap)
        log.warning("%s (retrying in %.1fs)", message, delay)

    # -- dependencies -----------------------------------------------------------------------------------------

    def _resolve(self, keys: set[str] | None) -> None:
        """Resolve again the dependencies named in ``keys`` (all when None), and rewrite the outputs of the
        manifests where a value changed. Only the named dependencies cost a request."""
        started = time.monotonic()
        only: dict[Path, set[str]] | None = None
        if keys is not None:
            only = {}
            for key in keys:
                file, _, name = key.partition("::")
                only.setdefault(Path(file), set()).add(name)
        resolution = resolve_set(
            self.manifests,
            self.client,
            self.options.cache_dir,
            Budget.of(self.options.budget),
            self.resolvers,
            only=only,
        )
        for problem in resolution.cache_problems:
            log.warning("%s", problem)
        changed = [
            m
            for m in self.manifests.manifests
            if m.file in resolution.by_manifest and self._record_outcomes(m.file, resolution.by_manifest[m.file])
        ]
        for loaded in changed:
            self._render(loaded)
        if keys is not None and changed:
            self.metrics.observe("consul_manifest_watch_latency_seconds", time.monotonic() - started)
        if changed and self.child is not None:
            self.child_pending = time.monotonic()

    def _render(self, loaded: LoadedManifest) -> None:
        items = [
            self.outcomes[(loaded.file, name)]
            for name in sorted(loaded.manifest.dependencies)
            if (loaded.file, name) in self.outcomes
        ]
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

    def _record_outcomes(self, path: Path, items: list[Resolved]) -> bool:
        """Keep the new outcomes; return whether any changed."""
        changed = False
        for item in items:
            self.metrics.inc("consul_manifest_resolutions_total", source=item.source)
            previous = self.outcomes.get((path, item.name))
            if not item.same_outcome(previous):
                changed = True
                if previous is not None:
                    log.info("%s: %s (%s)", item.name, item.value, item.source)
            self.outcomes[(path, item.name)] = item
        return changed

    def _child_update(self) -> None:
        if self.child is None or self.child_pending is None:
            return
        if time.monotonic() - self.child_pending < self.options.child_debounce:
            return
        self.child_pending = None
        environment = child_environment(list(self.outcomes.values()))
        if environment == self.child_env:
            return
        self.child_env = environment
        reload_number = signal_number(self.options.reload_signal)
        if reload_number is not None:
            self.child.send(reload_number)
        else:
            self.child.restart(environment)

    # -- stop -------------------------------------------------------------------------------------------------

    def _on_exit(self) -> None:
        self._stop_files.set()
        self._shutdown_watches()
        for owner, desired in self.desired.items():
            leaving = {s.service_id for s in desired.services if s.on_exit == "deregister"}
            if not leaving:
                continue
            try:
                mine = self.client.agent_services(services_filter(owner, ()))  # this owner's, on this agent
                for service_id in sorted(leaving & set(mine)):
                    self.client.deregister_service(service_id)
                    log.info("%s: deregistered %s (on_exit: deregister)", owner, service_id)
            except ConsulError as err:
                log.error("%s: could not deregister on exit: %s", owner, err)

    # -- status -----------------------------------------------------------------------------------------------

    def _health(self) -> tuple[bool, dict[str, Any]]:
        recent = self.health.last_sync is not None and time.time() - self.health.last_sync < 3 * self.options.resync
        ok = self.health.converged and recent
        return ok, {
            "converged": self.health.converged,
            "last_sync": self.health.last_sync,
            "last_error": self.health.last_error,
            "owners": sorted(self.desired),
            "uptime_seconds": round(time.time() - self.health.started),
            "pid": os.getpid(),
        }

    def _gauges(self) -> dict[str, float]:
        wakeups = sum(loop.wakeups for loop in self.drift_loops)
        if self.dependency_watch is not None:
            wakeups += self.dependency_watch.wakeups
        return {"consul_manifest_watch_wakeups_total": float(wakeups)}
