"""kill -9 of ``apply`` at random moments: the next apply completes the work, every key we created is claimed (none
orphaned, so destroy removes them), and a key that someone else created under the same prefix is never touched.

The next apply waits for the killed one's lock session to expire (Consul's reaper: up to about 2 x its 10 s TTL),
so the trials run many at a time and their waits overlap."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from manifest_runner.marks import record_key
from manifest_runner.testing.devagent import DevAgent
from tests.faults.proxy import Fault, count, fault_proxy
from tests.integration.helpers import call, kv_put, kv_value, run_process, services, write

pytestmark = pytest.mark.consul

TRIALS = 52
KEYS = 150


def keys_under(agent: DevAgent, prefix: str) -> set[str]:
    status, _, body = call(agent, "GET", f"/v1/kv/{prefix}?keys")
    return set(body or []) if status == 200 else set()


def one_trial(agent: DevAgent, folder: Path, owner: str, seed: int) -> str | None:
    """Returns None when every promise held, else what broke."""
    with fault_proxy(agent.ports.http) as proxy:
        writes = proxy.inject("delay", method="PUT", path="/v1/txn", body=b'"cas"', seconds=0.15)
        return _trial(agent, proxy.address, writes, folder, owner, seed)


def _trial(agent: DevAgent, proxy_address: str, writes: Fault, folder: Path, owner: str, seed: int) -> str | None:
    rng = random.Random(seed)
    prefix = f"{owner}/"
    kv_put(agent, f"{prefix}foreign", b"theirs")  # someone else's key, under our prefix
    body = "\n".join(f"    k{i:03d}: {i}" for i in range(KEYS))
    path = write(
        folder,
        f"{owner}.yaml",
        f"version: 1\nowner: {owner}\nservices:\n  - {{name: {owner}, id: {owner}, port: 1}}\n"
        f"kv:\n  prefix: {prefix}\n  enforce:\n{body}\n",
    )
    base = {k: v for k, v in os.environ.items() if not (k.startswith("CONSUL_") and k != "CONSUL_BIN")}
    process = subprocess.Popen(
        [sys.executable, "-m", "manifest_runner", "apply", str(path)],
        env={**base, "CONSUL_HTTP_ADDR": proxy_address},  # writes slowed down: the kill lands among them
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while writes.hits == 0 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(rng.uniform(0.0, 0.6))  # the writes: 3 transactions of 0.15 s or more, then the registration
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    landed = "before its first write" if writes.hits == 0 else "among its 3 write transactions"
    if writes.hits >= 3:
        landed = "after its transactions (registering)"
    count(f"kill -9 of apply {landed}")
    again = run_process(agent.http_addr, "apply", str(path))
    if again.returncode != 0:
        return f"the next apply failed: {again.stderr}"
    record = json.loads(kv_value(agent, record_key(owner)) or b"{}")
    ours = set(record.get("keys", {}))
    present = keys_under(agent, prefix)
    wanted = {f"{prefix}k{i:03d}" for i in range(KEYS)}
    if present != wanted | {f"{prefix}foreign"}:
        return f"keys differ: {sorted(present ^ (wanted | {f'{prefix}foreign'}))[:5]}"
    if ours != wanted:
        return f"the record does not claim exactly our keys: {sorted(ours ^ wanted)[:5]}"
    if kv_value(agent, f"{prefix}foreign") != b"theirs":
        return "a foreign key was changed"
    destroyed = run_process(agent.http_addr, "destroy", "--yes", str(path))
    if destroyed.returncode != 0:
        return f"destroy failed: {destroyed.stderr}"
    if keys_under(agent, prefix) != {f"{prefix}foreign"} or owner in services(agent):
        return f"destroy left something behind: {sorted(keys_under(agent, prefix))[:5]}"
    return None


def test_kill_minus_nine_at_random_points(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    with ThreadPoolExecutor(max_workers=TRIALS // 2) as pool:
        outcomes = list(pool.map(lambda i: one_trial(consul, tmp_path, f"kill-{unique}-{i}", seed=i), range(TRIALS)))
    broken = [(i, what) for i, what in enumerate(outcomes) if what is not None]
    assert not broken, broken
