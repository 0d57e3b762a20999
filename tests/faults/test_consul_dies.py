"""Consul frozen (SIGSTOP) or killed in the middle of an apply or of a run: a clear exit 4 (apply) or patient
retries (run), and a clean convergence once it is back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from manifest_runner.testing.devagent import DevAgent, free_port
from tests.faults.proxy import count, fault_proxy
from tests.integration.helpers import kv_value, run_process, services, write
from tests.integration.runproc import RunProcess, wait_for

pytestmark = pytest.mark.consul


def big_manifest(folder: Path, owner: str, keys: int = 300) -> Path:
    body = "\n".join(f"    k{i:03d}: {i}" for i in range(keys))
    return write(
        folder,
        "m.yaml",
        f"version: 1\nowner: {owner}\nservices:\n  - {{name: {owner}, id: {owner}, port: 1}}\n"
        f"kv:\n  prefix: {owner}/\n  enforce:\n{body}\n",
    )


def agent_signal(agent: DevAgent, signum: int) -> None:
    assert agent.process is not None
    os.killpg(agent.process.pid, signum)


def start_apply(address: str, path: Path) -> subprocess.Popen[str]:
    base = {k: v for k, v in os.environ.items() if not (k.startswith("CONSUL_") and k != "CONSUL_BIN")}
    return subprocess.Popen(
        [sys.executable, "-m", "manifest_runner", "apply", "--timeout", "3", str(path)],
        env={**base, "CONSUL_HTTP_ADDR": address},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_consul_frozen_mid_apply(fresh_consul: DevAgent, tmp_path: Path, unique: str) -> None:
    path = big_manifest(tmp_path, f"frozen-{unique}")
    with fault_proxy(fresh_consul.ports.http) as proxy:
        proxy.inject("delay", method="PUT", path="/v1/txn", seconds=0.3)
        process = start_apply(proxy.address, path)
        wait_for(lambda: ("PUT", "/v1/txn") in proxy.requests, what="the apply reached its transactions")
        time.sleep(0.4)  # let a write or two land
        agent_signal(fresh_consul, signal.SIGSTOP)
        count("Consul frozen mid-apply")
        try:
            out, err = process.communicate(timeout=60)  # a hang guard: the request deadline ends it
        finally:
            agent_signal(fresh_consul, signal.SIGCONT)
    assert process.returncode == 4, out + err
    assert "Traceback" not in err and "within" in err
    again = run_process(fresh_consul.http_addr, "apply", str(path))
    assert again.returncode == 0, again.stderr
    assert kv_value(fresh_consul, f"frozen-{unique}/k299") == b"299"


def test_consul_killed_mid_apply(fresh_consul: DevAgent, tmp_path: Path, unique: str) -> None:
    path = big_manifest(tmp_path, f"killed-{unique}")
    with fault_proxy(fresh_consul.ports.http) as proxy:
        proxy.inject("delay", method="PUT", path="/v1/txn", seconds=0.3)
        process = start_apply(proxy.address, path)
        wait_for(lambda: ("PUT", "/v1/txn") in proxy.requests, what="the apply reached its transactions")
        time.sleep(0.4)
        fresh_consul.kill()
        count("Consul killed mid-apply")
        out, err = process.communicate(timeout=60)
    assert process.returncode == 4, out + err
    assert "Traceback" not in err
    fresh_consul.start()  # a dev agent comes back empty
    again = run_process(fresh_consul.http_addr, "apply", str(path))
    assert again.returncode == 0, again.stderr
    assert kv_value(fresh_consul, f"killed-{unique}/k000") == b"0"


def test_consul_frozen_then_killed_while_running(fresh_consul: DevAgent, tmp_path: Path, unique: str) -> None:
    owner = f"runfreeze-{unique}"
    path = big_manifest(tmp_path, owner, keys=20)
    port = free_port()
    with RunProcess(
        fresh_consul.http_addr, ["--no-cache", "--timeout", "2", "--listen", f"127.0.0.1:{port}", str(path)], tmp_path
    ) as run:
        wait_for(lambda: owner in services(fresh_consul), what="first apply")
        agent_signal(fresh_consul, signal.SIGSTOP)
        count("Consul frozen mid-run")
        time.sleep(6)  # longer than the request timeout: run must notice, and keep going
        agent_signal(fresh_consul, signal.SIGCONT)
        assert run.alive(), run.output()
        fresh_consul.restart()  # and killed: back empty
        count("Consul killed mid-run")
        wait_for(lambda: owner in services(fresh_consul), timeout=60, what="registered again")
        wait_for(lambda: kv_value(fresh_consul, f"{owner}/k019") == b"19", timeout=60, what="keys back")
        health = wait_for(
            lambda: json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz").read()),
            timeout=60,
            what="healthy again",
        )
        assert health["converged"] is True
        assert run.stop() == 0, run.output()
    assert "Traceback" not in run.output()
