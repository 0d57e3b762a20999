"""Every owner made to match its manifests, as ``run`` does it: converge, count, report, back off after a failure.

Services are always pruned on the runner's own agent (it is the authority for its instance's registrations); KV
keys only with ``--prune`` (they are shared configuration). After a failure the next attempt comes after a capped,
jittered backoff; a success resets it. A conflict is logged once, not at every resync.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from manifest_runner.consul.client import ConsulClient
from manifest_runner.converge.observe import services_filter
from manifest_runner.converge.planner import PlanPolicy
from manifest_runner.converge.reconcile import converge
from manifest_runner.converge.state import DesiredState
from manifest_runner.errors import ConsulError, ManifestRunnerError
from manifest_runner.run.telemetry import Metrics
from manifest_runner.util.backoff import Backoff
from manifest_runner.util.cancel import Cancel, Cancelled

log = logging.getLogger("consul_manifest.run")


@dataclass
class Health:
    converged: bool = False
    last_sync: float | None = None
    last_error: str | None = None
    started: float = field(default_factory=time.time)


class Converger:
    def __init__(
        self,
        client: ConsulClient,
        metrics: Metrics,
        *,
        prune: bool,
        lock_timeout: float,
        backoff: Backoff,
    ) -> None:
        self.client = client
        self.metrics = metrics
        self.policy = PlanPolicy(prune=prune, prune_services=True)
        self.lock_timeout = lock_timeout
        self.backoff = backoff
        self.health = Health()
        self.cancel = Cancel()
        """Set when the runner begins to stop: a wait for another applier's lock ends at once."""
        self.retry_at: float | None = None
        self.first_sync_done = False
        self._reported_conflicts: set[str] = set()

    def converge(self, desired: Mapping[str, DesiredState]) -> bool:
        """Converge every owner; True when all succeeded."""
        ok = True
        for owner, state in desired.items():
            if self.cancel.is_set():
                return False
            ok = self._one(owner, state) and ok
        self.first_sync_done = True
        if ok:
            self.health.converged = True
            self.health.last_sync = time.time()
            self.health.last_error = None
            self.metrics.set("consul_manifest_last_sync_timestamp_seconds", self.health.last_sync)
            self.retry_at = None
            self.backoff.reset()
        self.metrics.set("consul_manifest_converged", 1.0 if self.health.converged else 0.0)
        return ok

    def _one(self, owner: str, desired: DesiredState) -> bool:
        self.metrics.inc("consul_manifest_syncs_total")
        try:
            outcome = converge(self.client, desired, self.policy, lock_timeout=self.lock_timeout, cancel=self.cancel)
        except Cancelled:
            log.info("%s: stopping; not converged", owner)
            return False
        except ManifestRunnerError as err:
            self.failed(f"{owner}: {err}")
            return False
        conflicts = outcome.plan.conflicts
        if conflicts and outcome.report is None:
            text = "; ".join(f"{a.kind} {a.target}: {a.reason}" for a in conflicts)
            if text not in self._reported_conflicts:
                self._reported_conflicts.add(text)
                log.error("%s: not applied, conflicts: %s", owner, text)
            return False
        report = outcome.report
        if report is None:
            return True
        for result in report.results:
            if result.status == "done":
                self.metrics.inc("consul_manifest_actions_total", op=result.action.op)
                if self.first_sync_done:
                    self.metrics.inc("consul_manifest_drift_repaired_total")
                log.info("%s: %s", owner, result.line())
        if report.error is not None:
            self.failed(f"{owner}: {report.error}")
            return False
        return True

    def status(self, owners: list[str], resync: float, manifest_problem: str | None) -> tuple[bool, dict[str, Any]]:
        """What ``/healthz`` answers: healthy when converged, synced within three resync periods, and the manifests
        on disk are the ones in force (an invalid edit is unhealthy: what is running is not what is written)."""
        health = self.health
        recent = health.last_sync is not None and time.time() - health.last_sync < 3 * resync
        return health.converged and recent and manifest_problem is None, {
            "converged": health.converged,
            "last_sync": health.last_sync,
            "last_error": manifest_problem or health.last_error,
            "owners": owners,
            "uptime_seconds": round(time.time() - health.started),
            "pid": os.getpid(),
        }

    def failed(self, message: str) -> None:
        self.metrics.inc("consul_manifest_sync_errors_total")
        self.health.converged = False
        self.health.last_error = message
        delay = self.backoff.next()
        self.retry_at = time.monotonic() + delay
        log.warning("%s (retrying in %.1fs)", message, delay)

    def deregister_on_exit(self, desired: Mapping[str, DesiredState]) -> None:
        """Deregister the services whose ``on_exit`` is ``deregister`` (the default), keep the others."""
        for owner, state in desired.items():
            leaving = {s.service_id for s in state.services if s.on_exit == "deregister" and not s.node}
            if not leaving:
                continue
            try:
                mine = self.client.agent_services(services_filter(owner, ()))  # this owner's, on this agent
                for service_id in sorted(leaving & set(mine)):
                    self.client.deregister_service(service_id)
                    log.info("%s: deregistered %s (on_exit: deregister)", owner, service_id)
            except ConsulError as err:
                log.error("%s: could not deregister on exit: %s", owner, err)
