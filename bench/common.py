"""What the benchmarks share: the Consul binary, a plain HTTP call to a dev agent, a percentile."""

from __future__ import annotations

import http.client
import sys

from manifest_runner.testing.devagent import DevAgent, find_consul_binary


def consul_binary() -> str:
    """The Consul binary to start dev agents with; exits with a message when there is none."""
    binary = find_consul_binary()
    if binary is None:
        sys.exit("no consul binary: set CONSUL_BIN (scripts/get-consul)")
    return binary


def call(
    agent: DevAgent,
    method: str,
    path: str,
    body: str | None = None,
    *,
    timeout: float = 120,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request to the agent's HTTP API, outside the tool under measure: (status, headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", agent.ports.http, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        data = response.read()
        return response.status, dict(response.getheaders()), data
    finally:
        conn.close()


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by the nearest rank; NaN for no values."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")
