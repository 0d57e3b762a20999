"""Container-boot cost: `consul-manifest render` of 10 dependencies against a real agent, from process start to the
file written, side by side with `python -c pass` and `consul-manifest --version`, in one run.

    python -m bench.render [--runs 21]

Also prints where the import time goes (python -X importtime, the biggest top-level packages).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import call, consul_binary
from manifest_runner.testing.devagent import DevAgent

EXE = str(Path(sys.executable).with_name("consul-manifest"))


def median_walls(commands: dict[str, list[str]], runs: int, env: dict[str, str]) -> dict[str, float]:
    """Median wall time of each command, the commands interleaved run by run so that machine noise hits all."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(runs):
        for name, argv in commands.items():
            start = time.perf_counter()
            subprocess.run(argv, check=True, capture_output=True, env=env)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def import_costs(argv: list[str], env: dict[str, str]) -> list[tuple[str, int]]:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", *argv], capture_output=True, text=True, env=env, check=True
    )
    totals: dict[str, int] = {}
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        _, cumulative, name = (part.strip() for part in line.removeprefix("import time:").split("|"))
        if not name.startswith(" ") and cumulative.isdigit():
            top = name.strip().split(".")[0]
            totals[top] = max(totals.get(top, 0), int(cumulative))
    return sorted(totals.items(), key=lambda item: -item[1])[:8]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=21)
    args = parser.parse_args()
    binary = consul_binary()
    with DevAgent(binary) as agent, tempfile.TemporaryDirectory() as tmp:
        for i in range(10):
            body = (
                f'{{"ID": "dep{i}-1", "Name": "dep{i}", "Address": "10.0.0.{i}", "Port": {5000 + i}, '
                f'"Check": {{"TTL": "10m", "Status": "passing"}}}}'
            )
            call(agent, "PUT", "/v1/agent/service/register", body)
        manifest = Path(tmp) / "boot.yaml"
        deps = "\n".join(f"  DEP{i}_URL: {{service: dep{i}, format: 'http://{{address}}:{{port}}'}}" for i in range(10))
        manifest.write_text(f"version: 1\nowner: boot\ndependencies:\n{deps}\noutputs:\n  env_file: boot.env\n")
        env = {**os.environ, "CONSUL_HTTP_ADDR": agent.http_addr, "CONSUL_MANIFEST_CACHE_DIR": str(Path(tmp) / "c")}
        render = [EXE, "render", str(manifest)]
        subprocess.run(render, check=True, capture_output=True, env=env)
        assert (Path(tmp) / "boot.env").read_text().count("_URL=http://10.0.0.") == 10
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "consul-manifest --version": [EXE, "--version"],
            "consul-manifest render (10 dependencies)": render,
        }
        results = median_walls(commands, args.runs, env)
        floor = results["python -c pass"]
        print(f"Consul dev agent, median of {args.runs} runs each, interleaved in one run\n")
        print(f"{'command':45} {'median':>9} {'ratio':>7}")
        for name, seconds in results.items():
            print(f"{name:45} {seconds * 1000:7.1f}ms {seconds / floor:6.1f}x")
        wide(agent, Path(tmp), env, args.runs)
        print("\nwhere render's import time goes (cumulative, top-level packages):")
        for name, micros in import_costs(["-m", "manifest_runner", "render", str(manifest)], env):
            print(f"  {name:30} {micros / 1000:7.1f}ms")


def wide(agent: DevAgent, folder: Path, env: dict[str, str], runs: int) -> None:
    """render of 50 dependencies against render of 1: as processes, and the resolution alone in-process,
    concurrent (as now) and one after another (as the first version did)."""
    from manifest_runner.config import ConsulConfig
    from manifest_runner.consul.client import ConsulClient
    from manifest_runner.manifest.loader import load_manifests
    from manifest_runner.resolve import resolver as resolver_module
    from manifest_runner.resolve.cache import LastKnownGood
    from manifest_runner.resolve.resolver import Budget, Resolver

    for i in range(10, 50):
        body = (
            f'{{"ID": "dep{i}-1", "Name": "dep{i}", "Address": "10.0.1.{i}", "Port": {5000 + i}, '
            f'"Check": {{"TTL": "10m", "Status": "passing"}}}}'
        )
        call(agent, "PUT", "/v1/agent/service/register", body)
    paths = {}
    for count in (1, 50):
        deps = "\n".join(f"  D{i}: {{service: dep{i}}}" for i in range(count))
        path = folder / f"wide{count}.yaml"
        path.write_text(f"version: 1\nowner: wide{count}\ndependencies:\n{deps}\noutputs:\n  env_file: w{count}.env\n")
        paths[count] = path
    walls = median_walls({str(c): [EXE, "render", "--no-cache", str(p)] for c, p in paths.items()}, runs, env)
    client = ConsulClient(ConsulConfig.from_sources({"http_addr": agent.http_addr}, {}))
    inner: dict[str, float] = {}
    for label, parallel in (("concurrent", resolver_module.PARALLEL), ("one after another", 1)):
        resolver_module.PARALLEL = parallel
        for count, path in paths.items():
            dependencies = load_manifests([path], {}).manifests[0].manifest.dependencies
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                Resolver(client, LastKnownGood(None, "w")).resolve(dependencies, Budget.of(10))
                times.append(time.perf_counter() - start)
            inner[f"{label} {count}"] = statistics.median(times)
    resolver_module.PARALLEL = 16
    print(f"\nrender of 50 dependencies against 1 (median of {runs}):")
    print(
        f"  as processes: 1 dep {walls['1'] * 1000:.1f} ms, 50 deps {walls['50'] * 1000:.1f} ms: "
        f"{walls['50'] / walls['1']:.2f}x"
    )
    for label in ("concurrent", "one after another"):
        one, fifty = inner[f"{label} 1"], inner[f"{label} 50"]
        print(
            f"  resolution alone, {label:18}: 1 dep {one * 1000:.2f} ms, 50 deps {fifty * 1000:.2f} ms: "
            f"{fifty / one:.2f}x"
        )


if __name__ == "__main__":
    main()
