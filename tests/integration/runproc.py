"""``consul-manifest run`` as a background process for tests, and conditions polled with a deadline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from manifest_runner.testing.devagent import DevAgent


def wait_for(condition: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy; fail with ``what`` after ``timeout`` seconds.
    (A deadline for a hang, not a timing assertion: the tests assert outcomes, never durations.)"""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = condition()
        except (OSError, KeyError, ValueError) as err:
            last = err
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


class RunProcess:
    """A `consul-manifest run` child with its log in a file."""

    def __init__(self, agent_addr: str, args: list[str], workdir: Path, env: dict[str, str] | None = None) -> None:
        self.log_path = workdir / f"run-{time.monotonic_ns()}.log"
        self.log = self.log_path.open("w")
        base = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_HTTP")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "manifest_runner", "run", *args],
            env={**base, "CONSUL_HTTP_ADDR": agent_addr, **(env or {})},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text()

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        code = self.process.wait(timeout)
        self.log.close()
        return code

    def __enter__(self) -> RunProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        if exc[0] is not None:  # a failed test shows what run said (pytest prints captured output on failure)
            print(f"--- consul-manifest run output ---\n{self.output()}")
        if not self.log.closed:
            self.log.close()


def established_connections(pid: int, port: int) -> int:
    """TCP connections of process ``pid`` to 127.0.0.1:``port`` that are open (from /proc, no tool needed)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = str(fd.readlink())
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            remote, state, inode = fields[2], fields[3], fields[9]
            if state == "01" and inode in inodes and int(remote.rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


def running(agent: DevAgent) -> str:
    return agent.http_addr
