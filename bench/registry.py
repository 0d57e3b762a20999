"""ConsulRegistry.get_service_endpoint with a live watch, side by side with the seed's approach (one health query
per call, through py-consul), in one run; and how soon a change in Consul is visible in the watched cache.

    python -m bench.registry [--calls 20000] [--seed-calls 2000] [--events 200]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import statistics
import sys
import threading
import time
from typing import Any

import consul

from manifest_runner import ConsulRegistry
from manifest_runner.testing.devagent import DevAgent, find_consul_binary


def api(agent: DevAgent, method: str, path: str, body: str | None = None) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", agent.ports.http, timeout=30)
    conn.request(method, path, body=body)
    conn.getresponse().read()
    conn.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def seed_endpoint(client: Any, name: str) -> str:
    """The seed's way: a health query per call, then a pick."""
    _, entries = client.health.service(name, passing=True)
    service = random.choice(entries)["Service"]
    return f"{service['Address']}:{service['Port']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--seed-calls", type=int, default=2000)
    parser.add_argument("--events", type=int, default=200)
    args = parser.parse_args()
    binary = find_consul_binary()
    if binary is None:
        sys.exit("no consul binary: set CONSUL_BIN (scripts/get-consul)")
    with DevAgent(binary) as agent:
        for n in range(3):
            api(
                agent,
                "PUT",
                "/v1/agent/service/register",
                json.dumps(
                    {
                        "ID": f"backend-{n}",
                        "Name": "backend",
                        "Address": "127.0.0.1",
                        "Port": 9000 + n,
                        "Check": {"CheckID": f"backend-{n}", "TTL": "1h", "Status": "passing"},
                    }
                ),
            )
        os.environ["CONSUL_HTTP_ADDR"] = agent.http_addr
        registry = ConsulRegistry("bench-client", 1)
        seen = threading.Event()
        registry.watch_service("backend", lambda _instances: seen.set())
        seen.wait(10)

        start = time.perf_counter()
        for _ in range(args.calls):
            registry.get_service_endpoint("backend")
        ours = (time.perf_counter() - start) / args.calls
        client = consul.Consul(host="127.0.0.1", port=agent.ports.http)
        start = time.perf_counter()
        for _ in range(args.seed_calls):
            seed_endpoint(client, "backend")
        theirs = (time.perf_counter() - start) / args.seed_calls
        print(f"get_service_endpoint, per call ({args.calls} watched calls, {args.seed_calls} seed calls):")
        print(f"  with a live watch (cache)           {ours * 1e6:9.1f} µs")
        print(f"  the seed's way (a health query)     {theirs * 1e6:9.1f} µs")
        print(f"  ratio: {theirs / ours:.0f}x faster")

        delays = []
        changed = threading.Event()
        registry.watch_service("backend", lambda _instances: changed.set())
        time.sleep(0.2)
        changed.clear()
        for i in range(args.events):
            verb = "fail" if i % 2 == 0 else "pass"
            changed.clear()
            start = time.perf_counter()
            api(agent, "PUT", f"/v1/agent/check/{verb}/backend-0")
            if not changed.wait(10):
                raise TimeoutError("the change did not reach the cache")
            delays.append(time.perf_counter() - start)
            time.sleep(0.01)
        print(
            f"\nchange in Consul -> visible in the watched cache ({args.events} check flips): "
            f"p50 {percentile(delays, 0.5) * 1000:.2f} ms, p99 {percentile(delays, 0.99) * 1000:.2f} ms, "
            f"mean {statistics.mean(delays) * 1000:.2f} ms"
        )
        registry.close()


if __name__ == "__main__":
    main()
