"""A child process with its dependencies in its environment, kept current (``exec --watch``, ``run -- CMD``).

The child runs in its own process group, so that a terminal's Ctrl-C reaches consul-manifest only, which forwards
it: every signal reaches the child exactly once. When a value changes, the child is restarted (SIGTERM, then SIGKILL
after ``grace`` seconds) or sent ``reload_signal``, after ``debounce`` seconds without further change. The exit code
is the child's (128 + N when a signal N ended it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from manifest_runner.boot import Resolution, child_environment, require_all, resolve_set, write_outputs
from manifest_runner.consul.client import ConsulClient
from manifest_runner.consul.watch import DependencyWatch
from manifest_runner.loader import ManifestSet
from manifest_runner.resolve import Budget, Resolver

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
    """``SIGHUP``, ``HUP`` or ``1`` -> 1; None stays None."""
    if name is None:
        return None
    if name.isdigit():
        return int(name)
    upper = name.upper()
    return int(getattr(signal, upper if upper.startswith("SIG") else f"SIG{upper}"))


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
        self.process = subprocess.Popen(list(self.command), env=environment, process_group=0)
        log.info("started %s (pid %d)", self.command[0], self.process.pid)

    def poll(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def send(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signum)

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after the grace period; returns the exit code."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.send(signal.SIGTERM)
            try:
                self.process.wait(self.grace)
            except subprocess.TimeoutExpired:
                log.warning("%s did not exit within %gs of SIGTERM: SIGKILL", self.command[0], self.grace)
                self.send(signal.SIGKILL)
                self.process.wait()
        return self.process.returncode

    def restart(self, environment: dict[str, str]) -> None:
        self.stop()
        self.restarts += 1
        self.start(environment)


def install_forwarding(events: queue.Queue[tuple[str, Any]], signals: Sequence[int] = FORWARDED) -> None:
    """Turn signals into events for the main loop (handlers only enqueue: nothing unsafe runs in a handler)."""
    for signum in signals:
        signal.signal(signum, lambda number, _frame: events.put(("signal", number)))


def dependency_keys(manifest_set: ManifestSet) -> dict[str, Any]:
    """Every dependency of the set under a key naming its manifest, for :class:`DependencyWatch`."""
    return {f"{m.file}::{name}": dep for m in manifest_set.manifests for name, dep in m.manifest.dependencies.items()}


def supervise(
    manifest_set: ManifestSet,
    client: ConsulClient | None,
    command: Sequence[str],
    *,
    cache_dir: Path | None,
    budget: float,
    reload_signal: str | None,
    debounce: float,
    grace: float,
    echo: Callable[[str], None],
) -> int:
    """exec --watch: returns the exit code to leave with."""
    events: queue.Queue[tuple[str, Any]] = queue.Queue()
    watch = None
    if client is not None:  # watch first, then read: a change in between is seen, not lost
        watch = DependencyWatch(
            client,
            dependency_keys(manifest_set),
            lambda keys: events.put(("deps", keys)),
            on_error=lambda name, err: log.warning("watch %s: %s", name, err),
        ).start()
        watch.wait_ready(min(budget, 5.0))
    try:
        resolvers: dict[str, Resolver] = {}

        def resolve() -> Resolution:
            return resolve_set(manifest_set, client, cache_dir, Budget.of(budget), resolvers)

        resolution = resolve()
        for warning in resolution.warnings:
            echo(f"warning: {warning}")
        require_all(resolution)
        install_forwarding(events)
        child = Child(command, grace)
        write_outputs(manifest_set, resolution)
        child.start(child_environment(resolution.all))
        return _loop(
            events,
            child,
            resolve,
            manifest_set=manifest_set,
            reload_number=signal_number(reload_signal),
            debounce=debounce,
            echo=echo,
        )
    finally:
        if watch is not None:
            watch.stop()


def _loop(
    events: queue.Queue[tuple[str, Any]],
    child: Child,
    resolve: Callable[[], Resolution],
    *,
    manifest_set: ManifestSet,
    reload_number: int | None,
    debounce: float,
    echo: Callable[[str], None],
) -> int:
    """Until the child exits: forward signals, and act on dependency changes after ``debounce`` seconds of quiet."""
    environment = dict(child.environment)
    pending_since: float | None = None
    while True:
        code = child.poll()
        if code is not None:
            return exit_code(code)
        timeout = 0.1 if pending_since is None else max(0.0, pending_since + debounce - time.monotonic())
        try:
            kind, payload = events.get(timeout=min(timeout, 0.1))
        except queue.Empty:
            kind, payload = "tick", None
        if kind == "signal":
            child.send(payload)
        elif kind == "deps":
            pending_since = time.monotonic()
        elif pending_since is not None and time.monotonic() - pending_since >= debounce:
            pending_since = None
            fresh = resolve()
            if not fresh.failed:
                write_outputs(manifest_set, fresh)  # with --signal, the child re-reads these
            environment = _act_on(fresh, environment, child, reload_number, echo)


def _act_on(
    fresh: Resolution, environment: dict[str, str], child: Child, reload_number: int | None, echo: Callable[[str], None]
) -> dict[str, str]:
    if fresh.failed:
        echo("warning: a required dependency lost its value; the child keeps its current environment")
        return environment
    updated = child_environment(fresh.all)
    if updated == environment:
        return environment
    changed = sorted(k for k in set(updated) | set(environment) if updated.get(k) != environment.get(k))
    if reload_number is not None:
        echo(f"dependencies changed ({', '.join(changed)}): sending signal {reload_number}")
        child.send(reload_number)
    else:
        echo(f"dependencies changed ({', '.join(changed)}): restarting {child.command[0]}")
        child.restart(updated)
    return updated
