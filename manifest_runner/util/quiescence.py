"""Quiescence (consul-template's ``wait``): act once changes settle, but never later than a bound (pure).

A burst of changes is acted on once: ``min`` seconds after the last change, and at the latest ``max`` seconds after
the first (so that constant churn still gets through). ``splay`` adds a random delay, drawn once per burst, so that a
fleet restarting on one change does not restart at the same instant.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from manifest_runner.util.durations import parse_duration


def parse_wait(text: str) -> tuple[float, float]:
    """``5s`` -> (5, 20) (max defaults to four times min, as in consul-template); ``5s:10s`` -> (5, 10).
    ``0`` turns quiescence off. ValueError with a message for anything else."""
    low_text, _, high_text = text.partition(":")
    low = _seconds(low_text)
    high = _seconds(high_text) if high_text else low * 4
    if high < low:
        raise ValueError(f"wait {text!r}: the maximum is shorter than the minimum")
    return low, high


def _seconds(text: str) -> float:
    """A duration (``500ms``, ``5s``) or a number of seconds (``0``, ``1.5``)."""
    stripped = text.strip()
    try:
        value = float(stripped)
    except ValueError:
        return parse_duration(stripped)
    if not 0 <= value < 86400:
        raise ValueError(f"{text!r} is not a number of seconds between 0 and a day")
    return value


@dataclass
class Quiescence:
    low: float
    high: float
    splay: float = 0.0
    uniform: Callable[[], float] = field(default=random.random)
    first: float | None = None
    last: float | None = None
    delay: float = 0.0

    def changed(self, now: float) -> None:
        if self.first is None:
            self.first = now
            self.delay = self.uniform() * self.splay if self.splay > 0 else 0.0
        self.last = now

    def deadline(self) -> float | None:
        """When the pending burst is due (None: nothing pending)."""
        if self.first is None or self.last is None:
            return None
        return min(self.last + self.low, self.first + max(self.high, self.low)) + self.delay

    def due(self, now: float) -> bool:
        """Whether the pending burst is due now; when it is, it is no longer pending."""
        deadline = self.deadline()
        if deadline is None or now < deadline:
            return False
        self.first = self.last = None
        return True
