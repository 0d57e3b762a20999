"""Dependencies at datacenter scale: what one `consul-manifest run` with 200 dependencies costs and how fast its
output is right, against one agent holding 500 services x 4 instances on 50 nodes (2,000 checks) and 20,000 keys;
side by side with the designs it replaces, in one run.

    python -m bench.deps [--services 500] [--watched 200] [--keys 20000] [--idle 20] [--churn 30] [--rate 5]

The runner talks to the agent through a byte-counting relay (bench/meter.py), so every figure is what crossed the
wire: requests, bytes (gzip as sent), connections.

1. Idle: requests/s, bytes/s and connections held while nothing changes.
2. Changes to services nobody watches: bytes per change, and outputs rewritten (should be none).
3. Churn (RATE changes/s, a mix of watched and unwatched services): for each change to a watched service, the time
   until the output file holds the new value (p50, p99, max); requests/s and bytes/s meanwhile.
4. Side by side: the aggregate watch of the first version (every wake-up downloads /v1/health/state/any and
   /v1/catalog/services: measured here, wire size) and consul-template's one connection per dependency (what the
   agent does with 220 blocking queries from one client).
5. An estimate for 1,000 runners on one datacenter.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.common import call, consul_binary, percentile
from bench.meter import Meter
from manifest_runner.testing.devagent import DevAgent

GZIP = {"Accept-Encoding": "gzip"}
"""Every read here asks for gzip, as the tool does: byte counts are what crosses the wire."""


def node_of(service: int, instance: int, nodes: int) -> int:
    return (service * 4 + instance) % nodes


def register(agent: DevAgent, service: int, instance: int, port: int, nodes: int) -> None:
    node = node_of(service, instance, nodes)
    body = {
        "Node": f"node-{node:02d}",
        "Address": f"10.0.{node // 250}.{node % 250 + 1}",
        "Service": {"ID": f"svc{service}-{instance}", "Service": f"svc{service}", "Port": port, "Tags": ["v1"]},
        "Check": {
            "Node": f"node-{node:02d}",
            "CheckID": f"svc{service}-{instance}",
            "Name": "alive",
            "Status": "passing",
            "ServiceID": f"svc{service}-{instance}",
        },
    }
    status_code, _, data = call(agent, "PUT", "/v1/catalog/register", json.dumps(body), headers=GZIP)
    if status_code != 200:
        raise RuntimeError(data.decode())


def populate(agent: DevAgent, services: int, nodes: int, keys: int) -> None:
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: register(agent, n // 4, n % 4, 20000 + n % 4, nodes), range(services * 4)))
    import base64

    for start in range(0, keys, 64):
        ops = [
            {"KV": {"Verb": "set", "Key": f"data/{i:05d}", "Value": base64.b64encode(b"x" * 32).decode()}}
            for i in range(start, min(keys, start + 64))
        ]
        call(agent, "PUT", "/v1/txn", json.dumps(ops), headers=GZIP)


def chosen_instance(service: int, nodes: int) -> int:
    """The instance ``strategy: first`` picks: Consul orders health results by node name."""
    return min(range(4), key=lambda k: f"node-{node_of(service, k, nodes):02d}")


def env_values(path: Path) -> dict[str, str]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    values = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            values[key] = value.strip("'\"")
    return values


class Watcher:
    """Polls the output file; records when each expected value appears."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.expected: dict[str, tuple[str, float]] = {}
        self.latencies: list[float] = []
        self.rewrites = 0
        self._last: tuple[int, int] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    def expect(self, name: str, value: str) -> None:
        with self._lock:
            self.expected[name] = (value, time.perf_counter())

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                stat = self.path.stat()
                signature = (stat.st_ino, stat.st_mtime_ns)
            except FileNotFoundError:
                signature = None
            if signature is not None and signature != self._last:
                self._last = signature
                self.rewrites += 1
                values = env_values(self.path)
                now = time.perf_counter()
                with self._lock:
                    for name, (value, since) in list(self.expected.items()):
                        if values.get(name) == value:
                            self.latencies.append(now - since)
                            del self.expected[name]
            time.sleep(0.002)

    def stop(self) -> None:
        self._stop.set()


def wire_size(agent: DevAgent, path: str) -> int:
    _, headers, data = call(agent, "GET", path, headers=GZIP)
    return len(data) + sum(len(k) + len(v) + 4 for k, v in headers.items()) + 17


def per_client_limit(agent: DevAgent, attempts: int) -> tuple[int, int]:
    """consul-template's way: one connection per dependency, each a blocking query. Returns (answered or blocking,
    refused by the agent's per-client limit)."""
    _, headers, _ = call(agent, "GET", "/v1/health/service/svc0", headers=GZIP)
    index = headers["X-Consul-Index"]
    sockets = []
    request = f"GET /v1/health/service/svc0?index={index}&wait=20s HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    for _ in range(attempts):
        conn = socket.create_connection(("127.0.0.1", agent.ports.http))
        conn.sendall(request)
        sockets.append(conn)
    time.sleep(1.0)
    refused = 0
    for conn in sockets:
        conn.setblocking(False)
        try:
            data = conn.recv(100)
            refused += data == b"" or b"429" in data[:20]
        except BlockingIOError:
            pass  # still blocking: it holds its connection
        except OSError:
            refused += 1
        conn.close()
    return attempts - refused, refused


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--services", type=int, default=500)
    parser.add_argument("--watched", type=int, default=200)
    parser.add_argument("--nodes", type=int, default=50)
    parser.add_argument("--keys", type=int, default=20000)
    parser.add_argument("--idle", type=float, default=20.0)
    parser.add_argument("--unwatched", type=int, default=50)
    parser.add_argument("--churn", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=5.0)
    args = parser.parse_args()
    binary = consul_binary()
    rng = random.Random(7)
    with DevAgent(binary) as agent, tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        populate(agent, args.services, args.nodes, args.keys)
        _, headers, checks = call(agent, "GET", "/v1/health/state/any", headers=GZIP)
        if headers.get("Content-Encoding") == "gzip":
            import gzip

            checks = gzip.decompress(checks)
        print(
            f"agent: {args.services} services x 4 instances on {args.nodes} nodes, "
            f"{len(json.loads(checks))} checks, {args.keys} keys (populated in {time.perf_counter() - started:.1f}s)"
        )
        folder = Path(tmp)
        lines = [f"  D{i}: {{service: svc{i}, strategy: first, format: '{{port}}'}}" for i in range(args.watched)]
        manifest = folder / "m.yaml"
        manifest.write_text(
            "version: 1\nowner: bench\ndependencies:\n" + "\n".join(lines) + "\noutputs:\n  env_file: out.env\n"
        )
        out = folder / "out.env"
        meter = Meter(agent.ports.http)
        env = {**os.environ, "CONSUL_HTTP_ADDR": meter.address}
        process = subprocess.Popen(
            [
                *(sys.executable, "-m", "manifest_runner", "run", "--no-cache", "--dependency-resync", "3600"),
                *("--log-level", "warning", str(manifest)),
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        ports = {s: 20000 + chosen_instance(s, args.nodes) for s in range(args.services)}
        try:
            deadline = time.perf_counter() + 60
            while len(env_values(out)) < args.watched and time.perf_counter() < deadline:
                time.sleep(0.05)
            if len(env_values(out)) < args.watched:
                raise SystemExit("the runner did not write its output")
            time.sleep(3)
            watcher = Watcher(out)
            time.sleep(0.2)

            up0, down0, req0 = meter.snapshot()
            time.sleep(args.idle)
            up1, down1, req1 = meter.snapshot()
            idle_bytes = (up1 - up0 + down1 - down0) / args.idle
            idle_requests = (req1 - req0) / args.idle
            print(f"\n1. idle, {args.watched} dependencies ({args.idle:.0f} s):")
            print(
                f"   requests/s {idle_requests:8.1f}   bytes/s {idle_bytes:10,.0f}   connections held {meter.open_now}"
            )

            rewrites = watcher.rewrites
            up0, down0, _ = meter.snapshot()
            begin = time.perf_counter()
            for n in range(args.unwatched):
                service = rng.randrange(args.watched, args.services)
                register(agent, service, chosen_instance(service, args.nodes), 30000 + n, args.nodes)
                time.sleep(1 / args.rate)
            time.sleep(1.0)
            span = time.perf_counter() - begin
            up1, down1, _ = meter.snapshot()
            unwatched = max(0.0, (up1 - up0 + down1 - down0) - idle_bytes * span) / args.unwatched
            print(f"\n2. {args.unwatched} changes to services nobody watches:")
            print(
                f"   bytes per change {unwatched:8,.0f} (above idle)   outputs rewritten {watcher.rewrites - rewrites}"
            )

            up0, down0, req0 = meter.snapshot()
            begin = time.perf_counter()
            changes = watched_changes = 0
            port = 40000
            while time.perf_counter() - begin < args.churn:
                service = rng.randrange(args.services)
                port += 1
                instance = chosen_instance(service, args.nodes)
                if service < args.watched:
                    ports[service] = port
                    watcher.expect(f"D{service}", str(port))
                    watched_changes += 1
                register(agent, service, instance, port, args.nodes)
                changes += 1
                time.sleep(1 / args.rate)
            settle = time.perf_counter() + 10
            while watcher.expected and time.perf_counter() < settle:
                time.sleep(0.05)
            span = time.perf_counter() - begin
            up1, down1, req1 = meter.snapshot()
            lat = watcher.latencies
            print(f"\n3. churn: {changes} changes in {args.churn:.0f} s ({watched_changes} to watched services):")
            print(
                f"   change -> correct output: p50 {percentile(lat, 0.5) * 1000:.0f} ms, "
                f"p99 {percentile(lat, 0.99) * 1000:.0f} ms, max {max(lat, default=0) * 1000:.0f} ms; "
                f"never right: {len(watcher.expected)}"
            )
            print(
                f"   requests/s {(req1 - req0) / span:8.1f}   bytes/s {(up1 - up0 + down1 - down0) / span:10,.0f}   "
                f"connections peak {meter.open_peak}"
            )
            watcher.stop()
        finally:
            process.terminate()
            process.wait(30)
            meter.close()

        aggregate = wire_size(agent, "/v1/health/state/any") + wire_size(agent, "/v1/catalog/services")
        print("\n4. side by side:")
        print(f"   {'':48} {'bytes per unrelated change':>28}")
        print(f"   {'consul-manifest (per-service watches)':48} {unwatched:28,.0f}")
        print(f"   {'first version (aggregate watch, gzip)':48} {aggregate:28,.0f}")
        print(f"   ratio: {aggregate / max(unwatched, 1):.0f}x fewer bytes")
        held, refused = per_client_limit(agent, 220)
        print(
            f"   consul-template style, one connection per dependency, 220 dependencies: {held} held, "
            f"{refused} refused by the agent's per-client limit; consul-manifest held at most {meter.open_peak}"
        )

        print("\n5. estimate for 1,000 runners (each with its local agent, the figures above):")
        print(
            f"   idle: {idle_requests * 1000:,.0f} requests/s and {idle_bytes * 1000 / 1e6:,.1f} MB/s in all, each "
            "runner to its own agent, answered from the agent's cache; to the servers: one blocking query per "
            "watched service per agent, answered only when that service changes"
        )
        print(
            f"   an unrelated change: {unwatched * 1000 / 1e6:,.2f} MB in all "
            f"(first version: {aggregate * 1000 / 1e6:,.0f} MB, from the leader)"
        )


if __name__ == "__main__":
    main()
