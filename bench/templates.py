"""Templates against env output, side by side in one run, against a real agent with 50 instances of a service.

    python -m bench.templates [--runs 11] [--events 40]

1. `consul-manifest render` of an nginx upstream template over 50 instances, beside `render` of one dependency to
   an env file (process start to file written, median).
2. In `run`: a change to the first instance (its port) -> the template's file and the env file rewritten, p50/p99
   (one runner holds both, so both see the same change).
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

from bench.common import call, consul_binary, percentile
from manifest_runner.testing.devagent import DevAgent

EXE = str(Path(sys.executable).with_name("consul-manifest"))
TEMPLATE = """upstream web {
{% for s in service("web") %}    server {{ s.address }}:{{ s.port }} weight={{ s.weight }};  # {{ s.id }}
{% endfor %}}
"""


def register(agent: DevAgent, number: int, port: int) -> None:
    body = {
        "ID": f"web-{number:02d}",
        "Name": "web",
        "Address": f"10.0.0.{number + 1}",
        "Port": port,
        "Check": {"CheckID": f"web-{number:02d}", "TTL": "1h", "Status": "passing"},
    }
    call(agent, "PUT", "/v1/agent/service/register", json.dumps(body))


def median_wall(argv: list[str], env: dict[str, str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True, env=env)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=11)
    parser.add_argument("--events", type=int, default=40)
    args = parser.parse_args()
    binary = consul_binary()
    with DevAgent(binary) as agent, tempfile.TemporaryDirectory() as tmp:
        for number in range(50):
            register(agent, number, 8000 + number)
        folder = Path(tmp)
        (folder / "upstream.tmpl").write_text(TEMPLATE)
        (folder / "t.yaml").write_text(
            "version: 1\noutputs:\n  templates: [{source: upstream.tmpl, destination: upstream.conf}]\n"
        )
        (folder / "e.yaml").write_text(
            "version: 1\ndependencies:\n  WEB: {service: web, strategy: first}\noutputs:\n  env_file: web.env\n"
        )
        env = {**os.environ, "CONSUL_HTTP_ADDR": agent.http_addr}
        template_wall = median_wall([EXE, "render", "--no-cache", str(folder / "t.yaml")], env, args.runs)
        env_wall = median_wall([EXE, "render", "--no-cache", str(folder / "e.yaml")], env, args.runs)
        assert (folder / "upstream.conf").read_text().count("server ") == 50
        print(f"1. render, median of {args.runs} (process start to file written):")
        print(f"   template over 50 instances {template_wall * 1000:8.1f} ms")
        print(f"   env file, one dependency    {env_wall * 1000:8.1f} ms")
        print(f"   ratio: {template_wall / env_wall:.2f}x")

        (folder / "both.yaml").write_text(
            "version: 1\nowner: both\ndependencies:\n  WEB: {service: web, strategy: first, format: '{port}'}\n"
            "outputs:\n  env_file: both.env\n  templates: [{source: upstream.tmpl, destination: both.conf}]\n"
        )
        process = subprocess.Popen(
            [EXE, "run", "--no-cache", "--log-level", "warning", str(folder / "both.yaml")],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        conf, envfile = folder / "both.conf", folder / "both.env"
        template_lat: list[float] = []
        env_lat: list[float] = []
        try:
            deadline = time.perf_counter() + 30
            while not (conf.exists() and envfile.exists()) and time.perf_counter() < deadline:
                time.sleep(0.01)
            time.sleep(0.5)
            for event in range(args.events):
                port = 20000 + event
                start = time.perf_counter()
                register(agent, 0, port)
                seen: dict[str, float] = {}
                while len(seen) < 2 and time.perf_counter() - start < 10:
                    now = time.perf_counter()
                    if "t" not in seen and f":{port} " in conf.read_text():
                        seen["t"] = now
                    if "e" not in seen and f"WEB={port}" in envfile.read_text():
                        seen["e"] = now
                    time.sleep(0.0005)
                template_lat.append(seen["t"] - start)
                env_lat.append(seen["e"] - start)
                time.sleep(0.05)
        finally:
            process.terminate()
            process.wait(30)
        print(f"\n2. run: a change -> file rewritten ({args.events} changes, ms)   p50      p99")
        for label, values in (("template over 50 instances", template_lat), ("env file", env_lat)):
            print(f"   {label:38} {percentile(values, 0.5) * 1000:7.1f}  {percentile(values, 0.99) * 1000:7.1f}")


if __name__ == "__main__":
    main()
