"""``consul-manifest run`` (and ``exec --watch``): one loop over collaborators that each own one concern.

Threads only watch and report, through one event queue (:mod:`.events`); this loop owns every decision and every
write. Its collaborators: the manifest files (:mod:`.files`), the watches of Consul (:mod:`.watches`: drift,
dependencies, TTL heartbeats), the converger (:mod:`.converger`), the outputs (:mod:`.outputs`), the supervised
command (:mod:`.supervisor`) and the status endpoint (:mod:`.telemetry`).
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

from manifest_runner.consul.client import ConsulClient
from manifest_runner.converge.desired import desired_states
from manifest_runner.converge.pipeline import owner_origins
from manifest_runner.converge.state import DesiredState
from manifest_runner.manifest.loader import ManifestSet
from manifest_runner.run import events as ev
from manifest_runner.run.converger import Converger
from manifest_runner.run.drift import DriftWatch
from manifest_runner.run.files import ManifestFiles
from manifest_runner.run.notify import notify
from manifest_runner.run.outputs import DependencyOutputs
from manifest_runner.run.supervisor import FORWARDED, ChildOptions, Supervisor
from manifest_runner.run.telemetry import Metrics, serve_status
from manifest_runner.run.watches import Watches, watch_failed
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
    child: ChildOptions | None = None
    """A command to supervise, and how."""
    offline_reason: str = "Consul was not asked (--offline)"
    backoff_start: float = 0.5
    backoff_cap: float = 30.0


class Runner:
    def __init__(
        self, manifests: ManifestSet, paths: Sequence[str], client: ConsulClient | None, options: RunOptions
    ) -> None:
        self.options, self.manifests = options, manifests
        self.events = ev.Events()
        self.metrics = Metrics()
        self.desired: dict[str, DesiredState] = {}
        self.outputs = DependencyOutputs(
            client,
            options.cache_dir,
            options.budget,
            self.metrics,
            offline_reason=options.offline_reason,
            pass_token=options.child is not None and options.child.pass_token,
            pristine=options.child is not None and options.child.pristine,
        )
        self.converger: Converger | None = None
        self.files: ManifestFiles | None = None
        drift = None
        if options.apply and client is not None:
            pace = Backoff(options.backoff_start, options.backoff_cap)
            self.converger = Converger(
                client, self.metrics, prune=options.prune, lock_timeout=options.lock_timeout, backoff=pace
            )
            self.files = ManifestFiles(paths, manifests, lambda: self.events.put(ev.FILES))
            drift = DriftWatch(client, lambda: self.events.put(ev.DRIFT), watch_failed)
        self.watches = Watches(
            client,
            drift=drift,
            on_dependencies=lambda keys: self.events.put(ev.DEPS, keys),
            on_beat=lambda _check, status, _output: self.metrics.inc("consul_manifest_heartbeats_total", status=status),
            on_check_lost=lambda _check: self.events.put(ev.DRIFT),  # the agent lost a check: converge again
        )
        self.supervisor = Supervisor(options.child) if options.child is not None else None
        now = time.monotonic()
        self.next_resync, self.next_dependency_resync = now + options.resync, now + options.dependency_resync

    def run(self) -> int:
        self.events.catch_signals(FORWARDED, self.converger.cancel.set if self.converger is not None else None)
        status, converger = None, self.converger
        if self.options.listen and converger is not None:
            status = serve_status(
                self.options.listen,
                lambda: converger.status(
                    sorted(self.desired), self.options.resync, self.files.problem if self.files else None
                ),
                self.metrics,
                lambda: {"consul_manifest_watch_wakeups_total": float(self.watches.wakeups)},
            )
            log.info("status endpoint on http://%s (/healthz, /metrics)", status.address)
        if self.files is not None:
            self.files.start()
        try:
            self._adopt(self.manifests)
            self.outputs.refresh(self.manifests, None)
            self.watches.set_extra(self.outputs.templates.watches())
            if self.options.require_values and self.outputs.failed():
                names = ", ".join(sorted(item.name for item in self.outputs.failed()))
                log.error("no value for %s (and no fallback): the command is not started", names)
                return 1
            if self.supervisor is not None:
                self.supervisor.start(self.outputs.environment())
            notify(f"READY=1\nMAINPID={os.getpid()}\nSTATUS=converged; watching Consul")
            return self._loop()
        finally:
            self.watches.close()
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
                if ev.RELOAD in batch.kinds:
                    notify("RELOADING=1")
                reloaded = self.files.reload(explicit=ev.RELOAD in batch.kinds)
                if reloaded is not None:
                    self._adopt(reloaded)
                    self._refresh(None)
                if ev.RELOAD in batch.kinds:
                    notify("READY=1")
            self._when_due(batch)
            self.outputs.flush(time.monotonic())
            self.watches.set_extra(self.outputs.templates.watches())
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
        retry_at = self.converger.retry_at if self.converger is not None else None
        if not (ev.DRIFT in batch.kinds or (retry_at is not None and now >= retry_at) or now >= self.next_resync):
            return
        if now >= self.next_resync:
            self.next_resync = now + self.options.resync
            if self.watches.drift is not None and self.watches.drift.node_replaced():
                self._adopt(self.manifests)
            if now >= self.next_dependency_resync:
                self.next_dependency_resync = now + self.options.dependency_resync
                self._refresh(None)
        if self.converger is not None:
            self.converger.converge(self.desired)

    def _timeout(self) -> float:
        now = time.monotonic()
        deadlines = [self.next_resync]
        if self.converger is not None and self.converger.retry_at is not None:
            deadlines.append(self.converger.retry_at)
        if self.supervisor is not None:  # notice the command's exit promptly, and act on a change when due
            deadlines += [now + 0.2, self.supervisor.deadline() or now + 0.2]
        if (settled := self.outputs.deadline()) is not None:
            deadlines.append(settled)
        return max(0.0, min(deadlines) - now)

    def _adopt(self, manifests: ManifestSet) -> None:
        """Make ``manifests`` the ones in force: watch first (a change made while we converge is then seen, not
        lost), converge, then start the heartbeats (a heartbeat updates a check that must exist)."""
        self.manifests = manifests
        self.outputs.keep_only(manifests)
        self.desired = desired_states(manifests, owner_origins(manifests)) if self.converger is not None else {}
        self.watches.start(manifests, self.desired.values())
        if self.converger is not None:
            self.converger.converge(self.desired)
            self.watches.start_heartbeats(self.desired.values())

    def _refresh(self, keys: set[str] | None) -> None:
        started = time.monotonic()
        changed = self.outputs.refresh(self.manifests, keys)
        self.watches.set_extra(self.outputs.templates.watches())
        if changed:
            if keys is not None:
                self.metrics.observe("consul_manifest_watch_latency_seconds", time.monotonic() - started)
            if self.supervisor is not None:
                self.supervisor.changed(time.monotonic())

    def _stop(self, signum: int | None, code: int) -> int:
        notify("STOPPING=1")
        if self.files is not None:
            self.files.stop()
        self.watches.close()
        if self.converger is not None:
            self.converger.deregister_on_exit(self.desired)
        if self.supervisor is not None and signum is not None:
            return self.supervisor.stop(signum)
        return code
