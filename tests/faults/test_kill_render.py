"""kill -9 of ``render`` while it writes: a reader of the output file sees the old file or the new one, whole,
never a part of one."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from manifest_runner.testing.devagent import DevAgent
from tests.faults.proxy import count
from tests.integration.helpers import kv_put, write

pytestmark = pytest.mark.consul

TRIALS = 30


def test_kill_minus_nine_during_renders(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    rng = random.Random(7)
    big = "x" * 200_000  # a large value: the write takes long enough to be cut in the middle
    path = write(
        tmp_path,
        "m.yaml",
        f"version: 1\nowner: kr-{unique}\ndependencies:\n  V: {{kv: {unique}/v}}\noutputs: {{env_file: out.env}}\n",
    )
    out = tmp_path / "out.env"
    base = {k: v for k, v in os.environ.items() if not (k.startswith("CONSUL_") and k != "CONSUL_BIN")}
    complete: set[str] = set()
    for trial in range(TRIALS):
        value = f"{trial:03d}{big}"
        kv_put(consul, f"{unique}/v", value.encode())
        process = subprocess.Popen(
            [sys.executable, "-m", "manifest_runner", "render", "--no-cache", str(path)],
            env={**base, "CONSUL_HTTP_ADDR": consul.http_addr},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.2, 0.6))
        process.send_signal(signal.SIGKILL)
        process.wait(30)
        count("kill -9 of render")
        if out.exists():
            text = out.read_text()
            line = next(line for line in text.splitlines() if line.startswith("V="))
            assert line.endswith(big), f"trial {trial}: a partial file"
            complete.add(line[2:5])
    assert complete, "no render ever finished: the trial never exercised a replacement"
