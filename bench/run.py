"""`consul-manifest run` against a real agent: change-to-output latency beside the floor, edit-to-converged, and
idle cost with many watched dependencies, all in one run.

    python -m bench.run [--events 210] [--edits 30] [--idle-deps 1000] [--idle-seconds 30]

1. Change-to-output: a write to Consul (a check flips, a KV value changes, an instance registers), then the time
   until the endpoints file is replaced, p50 and p99; side by side with the floor, the time a bare blocking query on
   the same endpoint (started before the write) takes to return after it.
2. Manifest edit to converged: a tag changed in the manifest file, then the time until the agent shows it.
3. Idle cost: resident memory and CPU of `run` watching IDLE_DEPS dependencies (half services, half keys), sampled
   from /proc over IDLE_SECONDS once it has settled.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import call, consul_binary, percentile
from manifest_runner.testing.devagent import DevAgent


def wait_change(path: Path, before: tuple[int, int], deadline: float) -> float:
    """Poll (every 0.2 ms) until the file is replaced; return the time it was seen."""
    while time.perf_counter() < deadline:
        try:
            stat = path.stat()
            if (stat.st_ino, stat.st_mtime_ns) != before:
                return time.perf_counter()
        except FileNotFoundError:
            pass
        time.sleep(0.0002)
    raise TimeoutError(f"{path} was not rewritten")


def signature(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns


class Floor:
    """A bare blocking query on ``path``, started before the write; records when it returns."""

    def __init__(self, agent: DevAgent, path: str) -> None:
        _, headers, _ = call(agent, "GET", path)
        index = headers["X-Consul-Index"]
        self.returned: float | None = None
        separator = "&" if "?" in path else "?"

        def block() -> None:
            call(agent, "GET", f"{path}{separator}index={index}&wait=30s")
            self.returned = time.perf_counter()

        self.thread = threading.Thread(target=block, daemon=True)
        self.thread.start()
        time.sleep(0.01)  # let the query reach the agent and block

    def wait(self) -> float:
        self.thread.join(30)
        if self.returned is None:
            raise TimeoutError("the bare blocking query did not return")
        return self.returned


def start_run(manifest: Path, agent: DevAgent, env: dict[str, str], *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "manifest_runner", "run", "--no-cache", "--log-level", "warning", *extra, str(manifest)],
        env={**env, "CONSUL_HTTP_ADDR": agent.http_addr},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def latency(agent: DevAgent, folder: Path, env: dict[str, str], events: int) -> None:
    register = lambda payload: call(agent, "PUT", "/v1/agent/service/register", json.dumps(payload))  # noqa: E731
    for name in ("a", "b"):
        register(
            {
                "ID": f"lat-{name}",
                "Name": "lat",
                "Port": 1,
                "Check": {"CheckID": f"lat-{name}", "TTL": "1h", "Status": "passing"},
            }
        )
    call(agent, "PUT", "/v1/kv/lat/value", "0")
    manifest = folder / "lat.yaml"
    manifest.write_text(
        "version: 1\nowner: lat\ndependencies:\n"
        "  SVC: {service: lat, strategy: first, format: '{id}'}\n"
        "  GROWING: {service: grow, fallback: none}\n"
        "  VALUE: {kv: lat/value}\n"
        "outputs:\n  json_file: lat.json\n"
    )
    output = folder / "lat.json"
    process = start_run(manifest, agent, env)
    try:
        deadline = time.perf_counter() + 30
        while not output.exists() and time.perf_counter() < deadline:
            time.sleep(0.01)
        time.sleep(0.5)
        kinds: dict[str, tuple[list[float], list[float]]] = {
            "check flip": ([], []),
            "kv put": ([], []),
            "new instance": ([], []),
        }
        state = {"flip": False, "n": 0}

        def flip() -> None:
            state["flip"] = not state["flip"]
            call(agent, "PUT", f"/v1/agent/check/{'fail' if state['flip'] else 'pass'}/lat-a")

        def put() -> None:
            state["n"] += 1
            call(agent, "PUT", "/v1/kv/lat/value", str(state["n"]))

        def grow() -> None:
            state["n"] += 1
            register({"ID": f"grow-{state['n']}", "Name": "grow", "Port": 2})

        actions: list[tuple[str, Callable[[], None], str]] = [
            ("check flip", flip, "/v1/health/service/lat"),
            ("kv put", put, "/v1/kv/lat/value"),
            ("new instance", grow, "/v1/health/service/grow"),
        ]
        for i in range(events):
            kind, act, path = actions[i % 3]
            before = signature(output)
            floor = Floor(agent, path)
            start = time.perf_counter()
            act()
            seen = wait_change(output, before, start + 10)
            kinds[kind][0].append(seen - start)
            kinds[kind][1].append(floor.wait() - start)
            time.sleep(0.02)
    finally:
        process.terminate()
        process.wait(30)
    ours_all = [v for o, _ in kinds.values() for v in o]
    floor_all = [v for _, f in kinds.values() for v in f]
    print(f"1. change to output file ({events} events, ms)      p50     p99   |  floor p50  floor p99")
    for kind, (ours, floors) in [*kinds.items(), ("all", (ours_all, floor_all))]:
        print(
            f"   {kind:42} {percentile(ours, 0.5) * 1000:7.2f} {percentile(ours, 0.99) * 1000:7.2f}   |"
            f"  {percentile(floors, 0.5) * 1000:8.2f} {percentile(floors, 0.99) * 1000:9.2f}"
        )
    print(f"   p99 above the floor's p99: {(percentile(ours_all, 0.99) - percentile(floor_all, 0.99)) * 1000:.2f} ms")


def edits(agent: DevAgent, folder: Path, env: dict[str, str], count: int) -> None:
    manifest = folder / "edit.yaml"
    template = "version: 1\nowner: edit\nservices:\n  - {{name: edited, id: edited, port: 1, tags: [v{n}]}}\n"
    manifest.write_text(template.format(n=0))
    process = start_run(manifest, agent, env)

    def tags() -> Any:
        _, _, body = call(agent, "GET", "/v1/agent/services")
        return json.loads(body).get("edited", {}).get("Tags")

    try:
        deadline = time.perf_counter() + 30
        while tags() != ["v0"] and time.perf_counter() < deadline:
            time.sleep(0.01)
        samples = []
        for n in range(1, count + 1):
            start = time.perf_counter()
            manifest.write_text(template.format(n=n))
            while tags() != [f"v{n}"]:
                if time.perf_counter() - start > 30:
                    raise TimeoutError("the edit was not applied")
                time.sleep(0.001)
            samples.append(time.perf_counter() - start)
            time.sleep(0.05)
    finally:
        process.terminate()
        process.wait(30)
    print(
        f"\n2. manifest edit to converged in Consul ({count} edits): p50 {percentile(samples, 0.5) * 1000:.1f} ms, "
        f"p99 {percentile(samples, 0.99) * 1000:.1f} ms (file-watch debounce 50 ms + run's 50 ms included)"
    )


def idle(agent: DevAgent, folder: Path, env: dict[str, str], deps: int, seconds: float) -> None:
    lines = [f"  S{i}: {{service: idle{i}, fallback: x}}" for i in range(deps // 2)]
    lines += [f"  K{i}: {{kv: idle/k{i}, fallback: x}}" for i in range(deps - deps // 2)]
    manifest = folder / "idle.yaml"
    manifest.write_text(
        "version: 1\nowner: idle\ndependencies:\n" + "\n".join(lines) + "\noutputs:\n  env_file: idle.env\n"
    )
    process = start_run(manifest, agent, env)
    try:
        deadline = time.perf_counter() + 60
        while not (folder / "idle.env").exists() and time.perf_counter() < deadline:
            time.sleep(0.05)
        time.sleep(3)
        ticks = os.sysconf("SC_CLK_TCK")

        def cpu() -> float:
            fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / ticks

        def rss() -> float:
            for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
            return 0.0

        cpu_start, wall_start = cpu(), time.perf_counter()
        peak = 0.0
        while time.perf_counter() - wall_start < seconds:
            peak = max(peak, rss())
            time.sleep(0.5)
        used = (cpu() - cpu_start) / (time.perf_counter() - wall_start)
    finally:
        process.terminate()
        process.wait(30)
    print(
        f"\n3. idle with {deps} watched dependencies, over {seconds:g} s: resident memory {peak:.1f} MiB, "
        f"CPU {used * 100:.2f}% of one core"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=210)
    parser.add_argument("--edits", type=int, default=30)
    parser.add_argument("--idle-deps", type=int, default=1000)
    parser.add_argument("--idle-seconds", type=float, default=30)
    args = parser.parse_args()
    binary = consul_binary()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_HTTP")}
    with DevAgent(binary) as agent, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(f"Consul dev agent {agent.http_addr}; all figures from this one run\n")
        latency(agent, folder, env, args.events)
        edits(agent, folder, env, args.edits)
        idle(agent, folder, env, args.idle_deps, args.idle_seconds)


if __name__ == "__main__":
    main()
