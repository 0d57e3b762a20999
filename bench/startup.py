"""Start-up cost of the command line, side by side with a bare interpreter, in one run.

    python -m bench.startup [--runs N]

Prints the median wall time of each command over N runs and its ratio to ``python -c pass``. Containers call
``consul-manifest`` at boot, so start-up is part of the product.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).parent.parent
EXE = str(Path(sys.executable).with_name("consul-manifest"))


def median_wall(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    args = parser.parse_args()
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "consul-manifest --version": [EXE, "--version"],
        "consul-manifest validate examples/quickstart.yaml": [EXE, "validate", str(ROOT / "examples/quickstart.yaml")],
    }
    results = {name: median_wall(argv, args.runs) for name, argv in commands.items()}
    floor = results["python -c pass"]
    print(f"{'command':55} {'median':>9} {'ratio':>7}")
    for name, seconds in results.items():
        print(f"{name:55} {seconds * 1000:7.1f}ms {seconds / floor:6.1f}x")


if __name__ == "__main__":
    main()
