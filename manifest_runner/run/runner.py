"""``consul-manifest run`` (and ``exec --watch``): one loop over collaborators that each own one concern.

Threads only watch and report, through one event queue (:mod:`.events`); this loop owns every decision and every
write. Its collaborators: the manifest files (:mod:`.files`), the drift watch (:mod:`.drift`), the converger
(:mod:`.converger`), the dependency watch and outputs (:mod:`.dependencies`, :mod:`.outputs`), the TTL heartbeats
(:mod:`.probes`), the supervised command (:mod:`.supervisor`) and the status endpoint (:mod:`.telemetry`).
``exec --watch`` is the same loop without applying: no converger, no drift or file watch, no heartbeats.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from manifest_runner.consul.blocking import wait_ready
from manifest_runner.consul.client import ConsulClient
from manifest_runner.converge.desired import desired_states
from manifest_runner.manifest.loader import ManifestSet
from manifest_runner.run import events as ev
from manifest_runner.run.converger import Converger
from manifest_runner.run.dependencies import DependencyWatch, dependency_keys
from manifest_runner.run.drift import DriftWatch
from manifest_runner.run.files import ManifestFiles
from manifest_runner.run.outputs import DependencyOutputs
from manifest_runner.run.probes import beats_for
from manifest_runner.run.supervisor import FORWARDED, Supervisor
from manifest_runner.run.telemetry import Metrics, StatusServer
from manifest_runner.util.backoff import Backoff

log = logging.getLogger("consul_manifest.run")


@dataclass
class RunOptions:
    apply: bool = True
    """False for ``exec --watch``: resolve and supervise only (SIGHUP then goes to the command)."""
    require_values: bool = False
    """Exit 1 before starting the command when a required dependency has no value (``exec --watch``)."""
    prune: bool = False
    resync: float = 30.0
    dependency_resync: float = 300.0
    """Every this many seconds, every dependency is resolved again, whatever the watches said."""
    debounce: float = 0.05
    lock_timeout: float = 60.0
    budget: float = 5.0
    cache_dir: Path | None = None
    listen: str | None = None
    command: Sequence[str] | None = None
    reload_signal: int | None = None
    child_debounce: float = 1.0
    grace: float = 10.0
    backoff_start: float = 0.5
    backoff_cap: float = 30.0


class Runner:
    def __init__(
        self, manifests: ManifestSet, paths: Sequence[str], client: ConsulClient | None, options: RunOptions
    ) -> None:
        self.client, self.options, self.manifests = client, options, manifests
        self.events = ev.Events()
        self.metrics = Metrics()
        self.desired = desired_states(manifests) if options.apply else {}
        self.outputs = DependencyOutputs(client, options.cache_dir, options.budget, self.metrics)
        self.converger: Converger | None = None
        self.files: ManifestFiles | None = None
        self.drift: DriftWatch | None = None
        if options.apply and client is not None:
            pace = Backoff(options.backoff_start, options.backoff_cap)
            self.converger = Converger(
                client, self.metrics, prune=options.prune, lock_timeout=options.lock_timeout, backoff=pace
            )
            self.files = ManifestFiles(paths, manifests, lambda: self.events.put(ev.FILES))
            self.drift = DriftWatch(client, lambda: self.events.put(ev.DRIFT), self._watch_failed)
        self.dependencies: DependencyWatch | None = None
        self.beats: list[Any] = []
        self.supervisor: Supervisor | None = None
        if options.command:
            self.supervisor = Supervisor(
                options.command,
                grace=options.grace,
                reload_signal=options.reload_signal,
                debounce=options.child_debounce,
            )
        now = time.monotonic()
        self.next_resync, self.next_dependency_resync = now + options.resync, now + options.dependency_resync

    def run(self) -> int:
        self.events.catch_signals(FORWARDED)
        status = (
            StatusServer(self.options.listen, self._health, self.metrics, self._gauges).start()
            if self.options.listen
            else None
        )
        if status is not None:
            log.info("status endpoint on http://%s (/healthz, /metrics)", status.address)
        if self.files is not None:
            self.files.start()
        try:
            self._adopt(self.manifests)
            self.outputs.refresh(self.manifests, None)
            if self.options.require_values and self.outputs.failed():
                names = ", ".join(sorted(item.name for item in self.outputs.failed()))
                log.error("no value for %s (and no fallback): the command is not started", names)
                return 1
            if self.supervisor is not None:
                self.supervisor.start(self.outputs.environment())
            return self._loop()
        finally:
            self._stop_watches()
            if status is not None:
                status.stop()

    def _loop(self) -> int:
        while True:
            if self.supervisor is not None and (code := self.supervisor.exited()) is not None:
                log.info("the command exited with %d: stopping", code)
                return self._stop(None, code)
            batch = self.events.next_batch(self._timeout(), self.options.debounce)
            stop = self._signals(batch)
            if stop is not None:
                return self._stop(stop, 0)
            if batch.dependencies:
                self._refresh(batch.dependencies)  # first: a dependency's latency is the product
            if self.files is not None and batch.kinds & {ev.FILES, ev.RELOAD}:
                reloaded = self.files.reload(explicit=ev.RELOAD in batch.kinds)
                if reloaded is not None:
                    self._adopt(reloaded)
                    self._refresh(None)
            self._when_due(batch)
            if self.supervisor is not None:
                self.supervisor.act(time.monotonic(), self.outputs.environment())

    def _signals(self, batch: ev.Batch) -> int | None:
        """Act on the batch's signals; returns the signal that stops the loop, if any."""
        for number in batch.signals:
            if number in (signal.SIGTERM, signal.SIGINT):
                log.info("signal %d: stopping", number)
                return number
            if number == signal.SIGHUP and self.options.apply:
                batch.kinds.add(ev.RELOAD)
            elif self.supervisor is not None:
                self.supervisor.forward(number)
        return None

    def _when_due(self, batch: ev.Batch) -> None:
        """Converge on drift, on a retry after a failure, and at every resync (with the dependencies' resync)."""
        now = time.monotonic()
        retry = self.converger is not None and self.converger.retry_at is not None and now >= self.converger.retry_at
        if not (ev.DRIFT in batch.kinds or retry or now >= self.next_resync):
            return
        if now >= self.next_resync:
            self.next_resync = now + self.options.resync
            if self.drift is not None and self.drift.node_replaced():
                self._adopt(self.manifests)
            if now >= self.next_dependency_resync:
                self.next_dependency_resync = now + self.options.dependency_resync
                self._refresh(None)
        if self.converger is not None:
            self.converger.converge(self.desired)

    def _timeout(self) -> float:
        deadlines = [self.next_resync]
        if self.converger is not None and self.converger.retry_at is not None:
            deadlines.append(self.converger.retry_at)
        if self.supervisor is not None:
            deadlines.append(self.supervisor.deadline() or time.monotonic() + 0.2)
            deadlines.append(time.monotonic() + 0.2)  # notice the command's exit promptly
        return max(0.0, min(deadlines) - time.monotonic())

    def _adopt(self, manifests: ManifestSet) -> None:
        """Make ``manifests`` the ones in force: watch first (a change made while we converge is then seen, not
        lost), converge, then start the heartbeats (a heartbeat updates a check that must exist)."""
        self.manifests = manifests
        self.outputs.keep_only(manifests)
        self._stop_watches()
        loops = []
        if self.options.apply:
            self.desired = desired_states(manifests)
            loops += self.drift.start(self.desired.values()) if self.drift is not None else []
        watched = dependency_keys(manifests)
        if watched and self.client is not None:
            self.dependencies = DependencyWatch(
                self.client, watched, lambda keys: self.events.put(ev.DEPS, keys), on_error=self._watch_failed
            ).start()
            loops += self.dependencies.loops
        if not wait_ready(loops):
            log.warning("some watches have no starting index yet; the resync will catch what they miss")
        if self.converger is not None:
            self.converger.converge(self.desired)
            checks = [check for d in self.desired.values() for s in d.services for check in s.checks]
            self.beats = [
                beat.start()
                for beat in beats_for(self.converger.client, checks, self._beat, lambda _c: self.events.put(ev.DRIFT))
            ]

    def _refresh(self, keys: set[str] | None) -> None:
        started = time.monotonic()
        if self.outputs.refresh(self.manifests, keys):
            if keys is not None:
                self.metrics.observe("consul_manifest_watch_latency_seconds", time.monotonic() - started)
            if self.supervisor is not None:
                self.supervisor.changed(time.monotonic())

    def _stop(self, signum: int | None, code: int) -> int:
        if self.files is not None:
            self.files.stop()
        self._stop_watches()
        if self.converger is not None:
            self.converger.deregister_on_exit(self.desired)
        if self.supervisor is not None and signum is not None:
            return self.supervisor.stop(signum)
        return code

    def _stop_watches(self) -> None:
        if self.drift is not None:
            self.drift.stop()
        if self.dependencies is not None:
            self.dependencies.stop()
            self.dependencies = None
        for beat in self.beats:
            beat.stop()
        self.beats = []

    def _watch_failed(self, name: str, err: BaseException) -> None:
        log.warning("watch %s: %s", name, err)

    def _beat(self, _check_id: str, status: str, _output: str) -> None:
        self.metrics.inc("consul_manifest_heartbeats_total", status=status)

    def _health(self) -> tuple[bool, dict[str, Any]]:
        health = self.converger.health if self.converger is not None else None
        last_sync = health.last_sync if health else None
        recent = last_sync is not None and time.time() - last_sync < 3 * self.options.resync
        converged = bool(health and health.converged)
        return converged and recent, {
            "converged": converged,
            "last_sync": last_sync,
            "last_error": health.last_error if health else None,
            "owners": sorted(self.desired),
            "uptime_seconds": round(time.time() - health.started) if health else 0,
            "pid": os.getpid(),
        }

    def _gauges(self) -> dict[str, float]:
        wakeups = (self.drift.wakeups if self.drift else 0) + (self.dependencies.wakeups if self.dependencies else 0)
        return {"consul_manifest_watch_wakeups_total": float(wakeups)}
