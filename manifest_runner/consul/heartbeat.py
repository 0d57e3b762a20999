"""The TTL heartbeat loop: a probe's result reported to a TTL check, again and again, in its own thread.

One loop for the runner (probes declared in the manifest) and the library (``ConsulRegistry.start_heartbeat``).
When the agent no longer knows the check (it restarted empty, or someone deregistered the service), ``on_missing``
is called, so that the owner of the registration can register it again; the next beat reports to the new check.
A beat that cannot reach Consul is logged and the loop goes on: the next beat reports again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from manifest_runner.consul.client import CheckNotFound, ConsulClient
from manifest_runner.errors import ConsulError

log = logging.getLogger("consul_manifest.heartbeat")

Probe = Callable[[], tuple[str, str]]
"""A probe returns (status, output): status is ``passing``, ``warning`` or ``critical``."""


def _ignore(check_id: str, status: str, output: str) -> None:
    return


@dataclass
class TtlHeartbeat:
    """Keeps one TTL check up to date from ``probe`` every ``every`` seconds. ``start()``, then ``stop()``."""

    client: ConsulClient
    check_id: str
    every: float
    probe: Probe
    on_result: Callable[[str, str, str], None] = _ignore
    on_missing: Callable[[str], None] | None = None
    last_status: str | None = None
    beats: int = 0
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> TtlHeartbeat:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat {self.check_id}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and not self._stop.is_set()

    def beat_once(self) -> None:
        """Probe, and report the result. Never raises for Consul's sake: a failure is logged."""
        status, output = self.probe()
        try:
            self.client.update_ttl(self.check_id, status, output)
        except CheckNotFound:
            log.warning("heartbeat %s: the agent does not know this check (restarted?)", self.check_id)
            if self.on_missing is not None:
                self.on_missing(self.check_id)
            return
        except ConsulError as err:
            log.warning("heartbeat %s: could not report %s: %s", self.check_id, status, err)
            return
        if status != self.last_status:
            log.info("heartbeat %s: %s", self.check_id, status)
        self.last_status = status
        self.beats += 1
        self.on_result(self.check_id, status, output)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.beat_once()
            except Exception:  # a probe or callback of the caller's: report it and keep beating
                log.exception("heartbeat %s: the probe failed", self.check_id)
            if self._stop.wait(max(0.0, self.every - (time.monotonic() - started))):
                return
