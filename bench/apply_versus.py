"""The cold apply as a process, this checkout against another revision and the naive py-consul script, interleaved.

    python -m bench.apply_versus [--against REV] [--runs 9] [--services 200] [--keys 2000]

Each run applies the same workload three ways, each to an empty dev agent of its own: ``consul-manifest apply``
from REV (a temporary git worktree, put first on ``PYTHONPATH``), the same from this checkout, and the naive script
of :mod:`bench.apply`. Interleaving the three puts a noisy machine's slow moments on every side alike; the medians
and both ratios are printed. Use it to tell whether a change to the apply path moved the figure at all.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.apply import NAIVE_SCRIPT, workload
from bench.common import consul_binary
from manifest_runner.testing.devagent import DevAgent

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--against", default="HEAD~1", help="the git revision to compare with (default HEAD~1)")
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--keys", type=int, default=2000)
    args = parser.parse_args()
    binary = consul_binary()
    with tempfile.TemporaryDirectory(prefix="bench-versus-") as tmp:
        folder = Path(tmp)
        other = folder / "other"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(other), args.against],
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            times = compare(binary, folder, other, args)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(other)], cwd=ROOT, check=False)
    medians = {side: statistics.median(values) for side, values in times.items()}
    print(
        f"cold apply as a process, {args.services} services + {args.keys} keys, an empty agent each, "
        f"{args.runs} interleaved runs:"
    )
    for side, values in times.items():
        print(f"  {side:10} median {medians[side] * 1000:7.1f} ms   runs {[round(v * 1000) for v in values]}")
    naive = medians["naive"]
    print(
        f"  ratio against the naive script: {args.against} {naive / medians[args.against]:.2f}x, "
        f"this checkout {naive / medians['this']:.2f}x"
    )


def compare(binary: str, folder: Path, other: Path, args: argparse.Namespace) -> dict[str, list[float]]:
    script = folder / "naive.py"
    script.write_text(NAIVE_SCRIPT)
    times: dict[str, list[float]] = {args.against: [], "this": [], "naive": []}
    for run in range(args.runs):
        for index, side in enumerate(times):
            text, spec = workload(f"versus{run}", args.services, args.keys, 5)
            manifest = folder / f"{run}-{index}.yaml"
            manifest.write_text(text)
            naive_spec = folder / f"{run}-{index}.json"
            naive_spec.write_text(json.dumps(spec))
            with DevAgent(binary) as agent:
                env = {**os.environ, "CONSUL_HTTP_ADDR": agent.http_addr}
                if side == "naive":
                    command = [sys.executable, str(script), str(naive_spec), str(agent.ports.http)]
                else:
                    env["PYTHONPATH"] = str(other if side == args.against else ROOT)
                    command = [sys.executable, "-m", "manifest_runner", "apply", str(manifest)]
                start = time.perf_counter()
                subprocess.run(command, env=env, stdout=subprocess.DEVNULL, check=True)
                times[side].append(time.perf_counter() - start)
    return times


if __name__ == "__main__":
    main()
