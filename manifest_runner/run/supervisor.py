"""A command run as a child with its dependencies in its environment, kept current (``exec --watch``, ``run -- CMD``).

The child runs in its own process group, so that a terminal's Ctrl-C reaches consul-manifest only, which forwards
it: every signal reaches the child exactly once. When a value changes, the child is restarted (the stop signal,
then SIGKILL after ``grace`` seconds) or sent ``reload_signal`` once the changes settle (:mod:`quiescence
<manifest_runner.util.quiescence>`: ``wait_min`` of quiet, at the latest ``wait_max`` after the first change, plus
an optional random ``splay``): a burst of changes is one restart.
The exit code is the child's (128 + N when a signal N ended it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

from manifest_runner.util.quiescence import Quiescence

log = logging.getLogger("consul_manifest.exec")

FORWARDED = (
    signal.SIGTERM,
    signal.SIGINT,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGWINCH,
)


def signal_number(name: str | None) -> int | None:
    """``SIGHUP``, ``HUP`` or ``1`` -> 1; None stays None. Raises ValueError for an unknown name."""
    if name is None:
        return None
    if name.isdigit():
        return int(name)
    upper = name.upper()
    number = getattr(signal, upper if upper.startswith("SIG") else f"SIG{upper}", None)
    if not isinstance(number, signal.Signals):
        raise ValueError(f"unknown signal {name!r}")
    return int(number)


def exit_code(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode


@dataclass
class Child:
    command: Sequence[str]
    grace: float = 10.0
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    environment: dict[str, str] = field(default_factory=dict)

    def start(self, environment: dict[str, str]) -> None:
        self.environment = dict(environment)
        argv = list(self.command)
        argv[0] = shutil.which(argv[0]) or argv[0]  # looked up on our PATH: a pristine environment has none
        self.process = subprocess.Popen(argv, env=environment, process_group=0)
        log.info("started %s (pid %d)", self.command[0], self.process.pid)

    def poll(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def send(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signum)

    def stop(self, signum: int = signal.SIGTERM) -> int | None:
        """``signum``, then SIGKILL after the grace period; returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.send(signum)
            try:
                self.process.wait(self.grace)
            except subprocess.TimeoutExpired:
                log.warning("%s did not exit within %gs of signal %d: SIGKILL", self.command[0], self.grace, signum)
                self.send(signal.SIGKILL)
                self.process.wait()
        return self.process.returncode

    def restart(self, environment: dict[str, str], signum: int = signal.SIGTERM) -> None:
        self.stop(signum)
        self.restarts += 1
        self.start(environment)


@dataclass(frozen=True)
class ChildOptions:
    """The supervised command and how to treat it (``exec --watch``, ``run -- CMD``)."""

    command: Sequence[str]
    reload_signal: int | None = None
    """On a change, send this signal instead of restarting."""
    wait_min: float = 1.0
    """Seconds of quiet after a change before acting."""
    wait_max: float = 4.0
    """The longest a change waits (counted from the first change of a burst)."""
    grace: float = 10.0
    """Seconds the command has to exit after the stop signal, before SIGKILL."""
    pass_token: bool = False
    """Pass CONSUL_HTTP_TOKEN on to the command (it is removed from its environment otherwise)."""
    splay: float = 0.0
    """A random delay of up to this many seconds before acting (drawn once per burst): spreads a fleet's restarts."""
    pristine: bool = False
    """Only the resolved variables in the command's environment."""
    kill_signal: int = signal.SIGTERM
    """The signal that stops the command on a restart."""


class Supervisor:
    """The child and what to do when its dependencies change: the one policy of ``exec --watch`` and ``run``."""

    def __init__(self, options: ChildOptions) -> None:
        self.child = Child(options.command, options.grace)
        self.reload_signal = options.reload_signal
        self.kill_signal = options.kill_signal
        self.quiet = Quiescence(options.wait_min, options.wait_max, options.splay)

    def start(self, environment: dict[str, str]) -> None:
        self.child.start(environment)

    def exited(self) -> int | None:
        """The child's exit code once it has exited, else None."""
        code = self.child.poll()
        return None if code is None else exit_code(code)

    def forward(self, signum: int) -> None:
        self.child.send(signum)

    def changed(self, now: float) -> None:
        """A dependency changed: act once the changes settle."""
        self.quiet.changed(now)

    def deadline(self) -> float | None:
        return self.quiet.deadline()

    def act(self, now: float, environment: dict[str, str]) -> None:
        """When a change is due: restart the child with ``environment`` (or signal it), if anything differs."""
        if not self.quiet.due(now):
            return
        current = self.child.environment
        if environment == current:
            return
        changed = sorted(k for k in set(environment) | set(current) if environment.get(k) != current.get(k))
        command = self.child.command[0]
        if self.reload_signal is not None:
            log.info(
                "dependencies changed (%s): sending signal %d to %s", ", ".join(changed), self.reload_signal, command
            )
            self.child.environment = dict(environment)
            self.child.send(self.reload_signal)
        else:
            log.info("dependencies changed (%s): restarting %s", ", ".join(changed), command)
            self.child.restart(environment, self.kill_signal)

    def stop(self, signum: int = signal.SIGTERM) -> int:
        return exit_code(self.child.stop(signum) or 0)
