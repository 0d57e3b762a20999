"""ConsulRegistry.get_service_endpoint with a live watch, side by side with the seed's approach (one health query
per call, through py-consul), in one run; and how soon a change in Consul is visible in the watched cache.

    python -m bench.registry [--calls 20000] [--seed-calls 2000] [--events 200]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import threading
import time
from typing import Any

import consul

from bench.common import call, consul_binary, percentile
from manifest_runner import ConsulRegistry
from manifest_runner.testing.devagent import DevAgent


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
    parser.add_argument("--hung-calls", type=int, default=1000)
    args = parser.parse_args()
    binary = consul_binary()
    with DevAgent(binary) as agent:
        for n in range(3):
            call(
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
            call(agent, "PUT", f"/v1/agent/check/{verb}/backend-0")
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
        hung_consul(args.hung_calls)


def hung_consul(calls: int) -> None:
    """A Consul that accepts connections and never answers: the first call waits out the timeout, then every call
    with a fallback returns at once (the circuit is open; a probe runs in the background), side by side with the
    same calls on a registry whose circuit is kept closed (every call waits the timeout, as before)."""
    from manifest_runner.config import ConsulConfig

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1024)
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        settings = ConsulConfig.from_sources({"http_addr": address, "timeout": 1.0}, {})
        registry = ConsulRegistry("hung-client", 1, settings=settings)
        start = time.perf_counter()
        registry.get_service_endpoint("db", fallback_url="localhost:5432")
        first = time.perf_counter() - start
        samples = []
        for _ in range(calls):
            start = time.perf_counter()
            registry.get_service_endpoint("db", fallback_url="localhost:5432")
            registry.get_service_address("db", fallback_url="localhost:5432")
            samples.append((time.perf_counter() - start) / 2)
        without = ConsulRegistry("hung-client-2", 1, settings=settings)
        without.circuit.failed = lambda err: False  # type: ignore[method-assign]  # never opens: the old way
        naive = []
        for _ in range(3):
            start = time.perf_counter()
            without.get_service_endpoint("db", fallback_url="localhost:5432")
            naive.append(time.perf_counter() - start)
        print(f"\nConsul hung (accepts, never answers), --timeout 1s, {calls} calls with a fallback after the first:")
        print(f"  first call (waits out the timeout)      {first * 1000:9.1f} ms")
        print(
            f"  each later call: p50 {percentile(samples, 0.5) * 1e6:.0f} µs, p99 {percentile(samples, 0.99) * 1e6:.0f}"
            f" µs, max {max(samples) * 1e6:.0f} µs"
        )
        print(f"  without the circuit breaker, each call  {statistics.median(naive) * 1000:9.1f} ms")
        print(f"  ratio: {statistics.median(naive) / percentile(samples, 0.99):,.0f}x faster (p99)")


if __name__ == "__main__":
    main()
