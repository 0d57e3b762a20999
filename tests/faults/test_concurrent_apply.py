"""Five pipelines applying one owner at the same moment: their writes never interleave, and the end state is
exactly one of their manifests, never a mix."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from manifest_runner.testing.devagent import DevAgent
from tests.integration.helpers import kv_value, run_process, services, write

pytestmark = pytest.mark.consul

WRITERS = 5
KEYS = 100  # two transactions per apply on Consul 1.8 (63 keys and the record each): an interleaving would show


def manifest(owner: str, writer: int) -> str:
    keys = "\n".join(f"    k{j:03d}: writer-{writer}" for j in range(KEYS))
    svcs = "\n".join(
        f"  - {{name: {owner}-s{j}, id: {owner}-s{j}, port: {8000 + j}, tags: [writer-{writer}]}}" for j in range(3)
    )
    return f"version: 1\nowner: {owner}\nservices:\n{svcs}\nkv:\n  prefix: {owner}/\n  enforce:\n{keys}\n"


def test_concurrent_applies_of_one_owner_serialise(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    owner = f"conc-{unique}"
    paths = [write(tmp_path, f"m{i}.yaml", manifest(owner, i)) for i in range(WRITERS)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_HTTP")}
    env["CONSUL_HTTP_ADDR"] = consul.http_addr
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "manifest_runner", "apply", "--output", "json", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for path in paths
    ]
    outputs = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0] * WRITERS, [err for _, err in outputs]

    holds = []
    for stdout, _ in outputs:
        (entry,) = json.loads(stdout)["owners"]  # the versioned document of apply (docs/json.md)
        report = entry["report"]
        if report is not None and report["lock"]["acquired_at"] is not None:
            holds.append((report["lock"]["acquired_at"], report["lock"]["released_at"]))
    holds.sort()
    assert holds, "no apply took the lock"
    for (_, released), (acquired, _) in itertools.pairwise(holds):
        assert released <= acquired, f"lock holds overlap: {holds}"

    values = {kv_value(consul, f"{owner}/k{j:03d}") for j in range(KEYS)}
    assert len(values) == 1, f"the keys are a mix of manifests: {sorted(v or b'' for v in values)[:5]}"
    winner = int((values.pop() or b"").decode().removeprefix("writer-"))
    tags = {tuple(s["Tags"]) for sid, s in services(consul).items() if sid.startswith(owner)}
    assert tags == {(f"writer-{winner}",)}
    check = run_process(consul.http_addr, "plan", "--detailed-exitcode", str(paths[winner]))
    assert check.returncode == 0, check.stdout
