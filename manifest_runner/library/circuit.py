"""A circuit breaker for the library: once Consul is found down, calls fail (or fall back) at once instead of each
waiting out a timeout. Whether it is back is found out by a probe in the background (``probe``, at most one at a
time, every ``probe_interval`` seconds), so no caller pays for it; without a probe, one caller is let through
instead. The clock comes in as a parameter.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from manifest_runner.errors import ConsulUnavailable

log = logging.getLogger("consul_manifest.registry")


@dataclass
class Circuit:
    probe_interval: float = 1.0
    clock: Callable[[], float] = time.monotonic
    probe: Callable[[], object] | None = None
    """Asks Consul something cheap; raises ConsulUnavailable when it is still down."""
    down_since: float | None = None
    reason: str = ""
    next_probe: float = 0.0
    probing: bool = False
    trips: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def is_open(self) -> bool:
        return self.down_since is not None

    def allow(self) -> bool:
        """Whether a request may go out now: always while Consul is up. While it is down: never when there is a
        background probe (one is started when due); otherwise one caller at a time, once the interval has passed."""
        with self._lock:
            if self.down_since is None:
                return True
            if self.probing or self.clock() < self.next_probe:
                return False
            self.probing = True
            if self.probe is None:
                return True
        threading.Thread(target=self._probe, name="consul probe", daemon=True).start()
        return False

    def _probe(self) -> None:
        if self.probe is None:
            return
        try:
            self.probe()
        except ConsulUnavailable as err:
            self.failed(err)
        except Exception as err:  # noqa: BLE001 - any answer but "unavailable" means Consul is there
            log.debug("probe: %s", err)
            self.succeeded()
        else:
            self.succeeded()

    def check(self) -> None:
        """Raise :class:`ConsulUnavailable` at once when no request may go out."""
        if not self.allow():
            with self._lock:
                since = self.clock() - (self.down_since or self.clock())
                wait = max(0.0, self.next_probe - self.clock())
            raise ConsulUnavailable(
                f"Consul is down ({self.reason}; {since:.1f}s ago); next probe in {wait:.1f}s", operation="circuit"
            )

    def failed(self, err: ConsulUnavailable) -> bool:
        """A request found Consul down. Returns True when this opened the circuit (logged)."""
        with self._lock:
            opened = self.down_since is None
            if opened:
                self.down_since = self.clock()
                self.trips += 1
            self.reason = err.detail
            self.next_probe = self.clock() + self.probe_interval
            self.probing = False
        if opened:
            log.warning(
                "Consul is unavailable (%s); calls fail at once, or fall back, until a probe (every %gs) finds it back",
                err.detail,
                self.probe_interval,
            )
        return opened

    def succeeded(self) -> bool:
        """A request got an answer. Returns True when this closed the circuit (logged)."""
        with self._lock:
            closed = self.down_since is not None
            self.down_since, self.probing = None, False
        if closed:
            log.info("Consul is reachable again")
        return closed
