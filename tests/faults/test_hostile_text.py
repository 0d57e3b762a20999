"""Text from Consul is untrusted: a service id, a tag or a meta value of someone else's can never become a line of
an env file, a command run by the shell that sources it, or a terminal escape in our output."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from manifest_runner.testing.devagent import DevAgent
from tests.faults.proxy import count
from tests.integration.helpers import register, run_process, write

pytestmark = pytest.mark.consul

HOSTILE_IDS = [
    "pg1\ntouch {marker}\n#",
    "pg1\r\nX_INJECTED=1\r\n#",
    "pg1\x1b]0;owned\x07\x1b[2J",
    "pg1\u202e;touch {marker}",
    "pg1$(touch {marker})`touch {marker}`",
]


@pytest.mark.parametrize("hostile", HOSTILE_IDS, ids=range(len(HOSTILE_IDS)))
def test_a_hostile_instance_id_cannot_escape_its_comment(
    consul: DevAgent, tmp_path: Path, unique: str, hostile: str
) -> None:
    marker = tmp_path / "pwned"
    service = f"pg-{unique}"
    instance_id = hostile.format(marker=marker)
    count("hostile text from Consul")
    register(
        consul,
        {
            "ID": instance_id,
            "Name": service,
            "Address": "10.0.0.9",
            "Port": 5432,
            "Meta": {"note": instance_id},
            "Tags": [instance_id],
            "Check": {"TTL": "10m", "Status": "passing"},
        },
    )
    path = write(
        tmp_path,
        "m.yaml",
        f"version: 1\ndependencies:\n  PG: {{service: {service}, format: '{{address}}:{{port}}/{{id}}'}}\n",
    )
    for fmt in ("env", "docker"):
        out = tmp_path / f"out.{fmt}"
        result = run_process(consul.http_addr, "render", "--no-cache", "--format", fmt, "-o", str(out), str(path))
        text = out.read_text() if out.exists() else ""
        if fmt == "docker" and ("\n" in instance_id or "\r" in instance_id):
            assert result.returncode == 1 and "newline" in result.stderr  # docker cannot carry it: refused
            continue
        assert result.returncode == 0, result.stderr
        comments = [line for line in text.splitlines() if line.startswith("#")]
        assert all(ch.isprintable() for line in comments for ch in line), comments  # escaped, on one line each
        if fmt == "env":
            script = f'set -a; . "{out}"; printf "%s\\0" "$PG" "${{X_INJECTED-unset}}"'
            sourced = subprocess.run(["sh", "-c", script], capture_output=True, check=False)  # bytes: \r stays
            value, injected, _ = sourced.stdout.decode().split("\0")
            assert value == f"10.0.0.9:5432/{instance_id}"  # the value arrives exactly, as one value
            assert injected == "unset"  # and defines nothing else
        else:
            lines = [line for line in text.splitlines() if line and not line.startswith("#")]
            assert [line.split("=", 1)[0] for line in lines] == ["PG"], text
    assert not marker.exists(), "a command from Consul was run"


def test_hostile_text_in_a_plan_is_escaped(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    owner = f"esc-{unique}"
    path = write(tmp_path, "m.yaml", f"version: 1\nowner: {owner}\nkv:\n  prefix: {owner}/\n  enforce: {{a: x}}\n")
    assert run_process(consul.http_addr, "apply", str(path)).returncode == 0
    from tests.integration.helpers import kv_put

    kv_put(consul, f"{owner}/a", "line1\n\x1b[31mred\x1b[0m\u202e".encode(), flags=0xC0DE0001)
    count("hostile text from Consul")
    result = run_process(consul.http_addr, "plan", str(path))
    assert "\x1b" not in result.stdout and "\u202e" not in result.stdout
    result = run_process(consul.http_addr, "plan", "--output", "json", str(path))
    json.loads(result.stdout)  # JSON has its own escaping, and stays valid
