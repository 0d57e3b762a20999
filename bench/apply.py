"""Apply at scale against a real agent, side by side with the naive py-consul script, in one run.

    python -m bench.apply [--services 200] [--keys 2000] [--prefixes 5] [--runs 5]

The workload: SERVICES services with a TTL check each, KEYS KV keys over PREFIXES prefixes. The naive approach is
what a user writes with py-consul: register every service, put every key, every time. Printed: requests, writes,
wall time (median of RUNS) and peak memory for each, and the ratios.
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
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import consul

from bench.common import consul_binary
from manifest_runner.config import ConsulConfig
from manifest_runner.consul.client import ConsulClient
from manifest_runner.converge.desired import desired_state
from manifest_runner.converge.reconcile import converge
from manifest_runner.manifest.loader import load_manifests
from manifest_runner.testing.devagent import DevAgent

NAIVE_SCRIPT = """
import json, sys, consul
spec = json.load(open(sys.argv[1]))
c = consul.Consul(host="127.0.0.1", port=int(sys.argv[2]))
for s in spec["services"]:
    c.agent.service.register(s["name"], service_id=s["id"], port=s["port"], tags=s["tags"],
                             check=consul.Check.ttl("30s"))
for key, value in spec["kv"].items():
    c.kv.put(key, value)
"""


def workload(owner: str, services: int, keys: int, prefixes: int) -> tuple[str, dict[str, Any]]:
    """The same workload as a manifest (ours) and as JSON (the naive script's input)."""
    svc = [
        {"name": f"{owner}-svc-{i % 20}", "id": f"{owner}-{i}", "port": 10000 + i, "tags": ["bench", f"n{i}"]}
        for i in range(services)
    ]
    kv = {f"{owner}-p{i % prefixes}/key-{i:05d}": f"value-{i}" for i in range(keys)}
    lines = ["version: 1", f"owner: {owner}", "services:" if svc else "services: []"]
    lines += [
        f"  - {{name: {s['name']}, id: {s['id']}, port: {s['port']}, tags: [bench, n{n}], checks: [{{ttl: 30s}}]}}"
        for n, s in enumerate(svc)
    ]
    lines += ["kv:", "  enforce:"]
    lines += [f"    {k}: {v}" for k, v in kv.items()]
    return "\n".join(lines) + "\n", {"services": svc, "kv": kv}


class Counting:
    """Counts the requests a py-consul client sends (the naive side), by wrapping its requests session."""

    def __init__(self, client: Any) -> None:
        self.counts: dict[str, int] = {}
        session = client.http.session
        original = session.request

        def request(method: str, *args: Any, **kwargs: Any) -> Any:
            self.counts[method] = self.counts.get(method, 0) + 1
            return original(method, *args, **kwargs)

        session.request = request


def naive_apply(port: int, spec: dict[str, Any]) -> dict[str, int]:
    client = consul.Consul(host="127.0.0.1", port=port)
    counter = Counting(client)
    for s in spec["services"]:
        client.agent.service.register(
            s["name"], service_id=s["id"], port=s["port"], tags=s["tags"], check=consul.Check.ttl("30s")
        )
    for key, value in spec["kv"].items():
        client.kv.put(key, value)
    return counter.counts


def naive_kv_only(port: int, spec: dict[str, Any]) -> dict[str, int]:
    client = consul.Consul(host="127.0.0.1", port=port)
    counter = Counting(client)
    for key, value in spec["kv"].items():
        client.kv.put(key, value)
    return counter.counts


LAST_PATHS: dict[str, int] = {}


def ours(addr: str, path: Path) -> Callable[[], dict[str, int]]:
    manifest = load_manifests([path], {}).manifests[0]
    desired = desired_state(manifest.owner, [manifest.manifest])

    def run() -> dict[str, int]:
        client = ConsulClient(ConsulConfig.from_sources({"http_addr": addr}, {}))
        outcome = converge(client, desired)
        if outcome.report is not None and not outcome.report.ok:
            raise RuntimeError(str(outcome.report.error))
        counts = client.request_counts()
        LAST_PATHS.clear()
        LAST_PATHS.update(client.request_counts(by_path=True))
        client.close()
        return counts

    return run


def measure(fn: Callable[[], dict[str, int]], runs: int) -> tuple[float, dict[str, int], float]:
    """Median wall seconds, the request counts of the last run, peak traced memory in MiB."""
    times = []
    counts: dict[str, int] = {}
    for _ in range(runs):
        start = time.perf_counter()
        counts = fn()
        times.append(time.perf_counter() - start)
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return statistics.median(times), counts, peak


# The peak memory of a child counts its pages between fork and exec, which are its parent's: a small wrapper
# process starts the command, so that only the wrapper's few MiB could be mistaken for the command's.
PEAK_WRAPPER = (
    "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(r.returncode)"
)


def measure_process(argv: list[str], runs: int, env: dict[str, str]) -> tuple[float, float]:
    """Median wall seconds and peak resident memory (MiB) of a command run as its own process."""
    times, peaks = [], []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
        wrapped = subprocess.run(
            [sys.executable, "-c", PEAK_WRAPPER, *argv], env=env, capture_output=True, text=True, check=True
        )
        peaks.append(int(wrapped.stderr.strip().splitlines()[-1]) / 1024)
    return statistics.median(times), max(peaks)


def show(name: str, seconds: float, counts: dict[str, int] | None, peak: float | None) -> None:
    requests = sum(counts.values()) if counts else "-"
    writes = sum(v for k, v in counts.items() if k != "GET") if counts else "-"
    memory = f"{peak:6.1f} MiB" if peak is not None else "     -    "
    print(f"  {name:58} {seconds * 1000:9.1f} ms  requests {requests!s:>5}  writes {writes!s:>5}  peak {memory}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=200)
    parser.add_argument("--keys", type=int, default=2000)
    parser.add_argument("--prefixes", type=int, default=5)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    binary = consul_binary()
    with DevAgent(binary) as agent, tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        port = agent.ports.http
        version = agent.api("GET", "/v1/agent/self")["Config"]["Version"]
        print(
            f"Consul {version} dev agent; {args.services} services with a TTL check, {args.keys} KV keys over "
            f"{args.prefixes} prefixes; median of {args.runs} runs\n"
        )

        text, _ = workload("ours", args.services, args.keys, args.prefixes)
        ours_path = folder / "ours.yaml"
        ours_path.write_text(text)
        _, naive_spec = workload("naive", args.services, args.keys, args.prefixes)
        naive_json = folder / "naive.json"
        naive_json.write_text(json.dumps(naive_spec))
        apply_ours = ours(agent.http_addr, ours_path)

        print("cold apply (empty agent):")
        start = time.perf_counter()
        cold_counts = apply_ours()
        cold = time.perf_counter() - start
        start = time.perf_counter()
        naive_cold_counts = naive_apply(port, naive_spec)
        naive_cold = time.perf_counter() - start
        show("consul-manifest (in-process)", cold, cold_counts, None)
        show("naive py-consul (in-process)", naive_cold, naive_cold_counts, None)

        kv_text, _ = workload("kvonly", 0, args.keys, args.prefixes)
        kv_times, naive_kv_times = [], []
        for run in range(args.runs):
            path = folder / f"kv{run}.yaml"
            path.write_text(kv_text.replace("kvonly", f"kvonly{run}"))
            apply_kv = ours(agent.http_addr, path)
            start = time.perf_counter()
            kv_counts = apply_kv()
            kv_times.append(time.perf_counter() - start)
            _, spec = workload(f"naivekv{run}", 0, args.keys, args.prefixes)
            start = time.perf_counter()
            naive_kv_counts = naive_kv_only(port, spec)
            naive_kv_times.append(time.perf_counter() - start)
        kv_ours, kv_naive = statistics.median(kv_times), statistics.median(naive_kv_times)
        print(f"\ncold apply, KV part only ({args.keys} new keys each run):")
        show("consul-manifest: transactions of up to 63 keys + journal", kv_ours, kv_counts, None)
        show("naive: one PUT per key", kv_naive, naive_kv_counts, None)
        print(f"  ratio: {kv_naive / kv_ours:.1f}x faster")

        print("\nno-op re-apply (nothing changed):")
        noop, noop_counts, noop_peak = measure(apply_ours, args.runs)
        naive_noop, naive_noop_counts, naive_peak = measure(lambda: naive_apply(port, naive_spec), args.runs)
        show("consul-manifest reconcile (in-process)", noop, noop_counts, noop_peak)
        show("naive re-apply (in-process)", naive_noop, naive_noop_counts, naive_peak)
        print(
            f"  ratio: {naive_noop / noop:.1f}x faster; requests {sum(noop_counts.values())} (the lock key, then "
            "services, checks, one read-only transaction, and the direct reads that prove it complete: the record "
            f"and {args.prefixes} roots, made concurrently), "
            f"writes {sum(v for k, v in noop_counts.items() if k != 'GET')} (the read-only transaction is a PUT)"
        )

        env = {**os.environ, "CONSUL_HTTP_ADDR": agent.http_addr}
        exe = str(Path(sys.executable).with_name("consul-manifest"))
        script = folder / "naive.py"
        script.write_text(NAIVE_SCRIPT)
        proc, proc_peak = measure_process([exe, "apply", str(ours_path)], args.runs, env)
        naive_proc, naive_proc_peak = measure_process(
            [sys.executable, str(script), str(naive_json), str(port)], args.runs, env
        )
        print("\nno-op re-apply as a process (interpreter start included):")
        show("consul-manifest apply", proc, None, proc_peak)
        show("python naive.py", naive_proc, None, naive_proc_peak)
        print(f"  ratio: {naive_proc / proc:.1f}x faster")

        # An agent's registrations slow down as it holds more services, so each side of each run gets an empty
        # agent of its own: the comparison is the same work on the same ground.
        cold_proc, naive_cold_proc = [], []
        for run in range(args.runs):
            mine, _ = workload(f"coldp{run}", args.services, args.keys, args.prefixes)
            mine_path = folder / f"coldp{run}.yaml"
            mine_path.write_text(mine)
            _, theirs = workload(f"naivep{run}", args.services, args.keys, args.prefixes)
            theirs_path = folder / f"naivep{run}.json"
            theirs_path.write_text(json.dumps(theirs))
            with DevAgent(binary) as fresh:
                start = time.perf_counter()
                subprocess.run(
                    [exe, "apply", str(mine_path)],
                    env={**env, "CONSUL_HTTP_ADDR": fresh.http_addr},
                    stdout=subprocess.DEVNULL,
                    check=True,
                )
                cold_proc.append(time.perf_counter() - start)
            with DevAgent(binary) as fresh:
                start = time.perf_counter()
                subprocess.run(
                    [sys.executable, str(script), str(theirs_path), str(fresh.ports.http)], env=env, check=True
                )
                naive_cold_proc.append(time.perf_counter() - start)
        cold_mine, cold_theirs = statistics.median(cold_proc), statistics.median(naive_cold_proc)
        print(f"\ncold apply as a process ({args.services} services + {args.keys} keys, an empty agent each):")
        show("consul-manifest apply (registrations 8 at a time)", cold_mine, None, None)
        show("python naive.py (one call at a time)", cold_theirs, None, None)
        print(f"  ratio: {cold_theirs / cold_mine:.1f}x faster")

        owners_folder = folder / "ten"
        owners_folder.mkdir()
        for i in range(10):
            part, _ = workload(f"ten{i}", args.services // 10, args.keys // 10, 1)
            (owners_folder / f"ten{i}.yaml").write_text(part)
        with DevAgent(binary) as fresh:
            start = time.perf_counter()
            subprocess.run(
                [exe, "apply", str(owners_folder)],
                env={**env, "CONSUL_HTTP_ADDR": fresh.http_addr},
                stdout=subprocess.DEVNULL,
                check=True,
            )
            together = time.perf_counter() - start
        with DevAgent(binary) as fresh:
            start = time.perf_counter()
            for i in range(10):
                subprocess.run(
                    [exe, "apply", str(owners_folder / f"ten{i}.yaml")],
                    env={**env, "CONSUL_HTTP_ADDR": fresh.http_addr},
                    stdout=subprocess.DEVNULL,
                    check=True,
                )
            apart = time.perf_counter() - start
        print(f"\nten owners in one folder ({args.services // 10} services + {args.keys // 10} keys each), cold:")
        show("consul-manifest apply FOLDER (owners at once, each under its lock)", together, None, None)
        show("ten consul-manifest apply FILE, one after another", apart, None, None)
        print(f"  ratio: {apart / together:.1f}x faster")

        print("\none changed service:")
        path_one = folder / "ours.yaml"
        path_one.write_text(text.replace("tags: [bench, n7]", "tags: [bench, n7, changed]"))
        changed = ours(agent.http_addr, path_one)
        start = time.perf_counter()
        one_counts = changed()
        one = time.perf_counter() - start
        show("consul-manifest (in-process)", one, one_counts, None)
        for operation, count in sorted(LAST_PATHS.items()):
            print(f"    {count:3d} x {operation}")
        print(f"  registration calls: {LAST_PATHS.get('PUT /v1/agent/service/register', 0)}")


if __name__ == "__main__":
    main()
