"""Capped exponential backoff with jitter: the one retry pace of every loop that waits on Consul.

``next()`` gives the delay before the next attempt (the base delay times a random factor in [0.5, 1.5), so that many
clients restarted together do not retry in step), then doubles the base up to ``cap``; ``reset()`` after a success.
Randomness comes in as a parameter, so tests can make it exact.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Backoff:
    start: float = 0.25
    cap: float = 30.0
    factor: float = 2.0
    jitter: bool = True
    uniform: Callable[[], float] = field(default=random.random, repr=False)
    current: float = field(init=False)

    def __post_init__(self) -> None:
        self.current = self.start

    def next(self) -> float:
        """The delay to wait now; the following one will be longer (up to ``cap``)."""
        delay = self.current * (0.5 + self.uniform()) if self.jitter else self.current
        self.current = min(self.current * self.factor, self.cap)
        return delay

    def reset(self) -> None:
        self.current = self.start
