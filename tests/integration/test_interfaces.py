"""What users of command-line tools expect, against a real agent: every reporting command's JSON parses (with its
format version), --quiet and --verbose, shell completion, an example in every command's --help."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from manifest_runner.cli import cli
from manifest_runner.testing.devagent import DevAgent
from tests.integration.helpers import run_cli, write

pytestmark = pytest.mark.consul


def manifest(owner: str) -> str:
    return f"""
version: 1
owner: {owner}
services:
  - {{name: {owner}-api, id: {owner}-api, port: 8080}}
kv:
  prefix: {owner}/
  enforce: {{a: 1, b: two}}
dependencies:
  API: {{service: {owner}-api, fallback: "x:1"}}
outputs:
  env_file: out.env
"""


def parsed(output: str) -> dict:
    document = json.loads(output)
    assert document["format_version"] == 1
    return document


def test_every_reporting_command_speaks_json(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    owner = f"json-{unique}"
    path = write(tmp_path, "m.yaml", manifest(owner))
    valid = parsed(run_cli(consul, "validate", "--output", "json", str(path)).stdout)
    assert valid["ok"] and valid["manifests"][0]["owner"] == owner and valid["manifests"][0]["kv_keys"] == 2

    bad = write(tmp_path, "bad.yaml", "version: 1\nservices: [{name: 'a b'}]\n")
    invalid = run_cli(consul, "validate", "--output", "json", str(bad))
    assert invalid.exit_code == 3
    problem = parsed(invalid.stdout)["problems"][0]
    assert (problem["file"], problem["line"]) == (str(bad), 2) and problem["path"].startswith("services")

    plan = parsed(run_cli(consul, "plan", "--output", "json", str(path)).stdout)
    assert plan["command"] == "plan" and plan["owners"][0]["counts"]["create"] == 3
    applied = run_cli(consul, "apply", "--output", "json", str(path))
    assert applied.exit_code == 0 and parsed(applied.stdout)["owners"][0]["report"]["ok"]

    rendered = run_cli(consul, "render", "--report", "json", "--no-cache", str(path))
    report = parsed(rendered.stdout)
    assert report["command"] == "render" and report["ok"]
    assert (report["dependencies"]["API"]["value"], report["dependencies"]["API"]["source"]) == (
        "127.0.0.1:8080",
        "consul",
    )
    assert report["outputs"][0]["path"].endswith("out.env")

    imported = run_cli(
        consul,
        "import",
        "--owner",
        f"imp-{unique}",
        "--kv-prefix",
        f"{owner}/",
        "-o",
        str(tmp_path / "i.yaml"),
        "--report",
        "json",
    )
    assert parsed(imported.stdout)["kv_keys"] == 2

    destroyed = run_cli(consul, "destroy", "--yes", "--output", "json", str(path))
    assert destroyed.exit_code == 0 and parsed(destroyed.stdout)["command"] == "destroy"


def test_quiet_and_verbose(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    owner = f"q-{unique}"
    path = write(tmp_path, "m.yaml", manifest(owner))
    quiet = run_cli(consul, "apply", "--quiet", str(path))
    assert quiet.exit_code == 0
    assert quiet.stdout.strip().splitlines() == [f"{owner}: 3 created, 0 updated, 0 deleted"]
    verbose = run_cli(consul, "plan", "-v", str(path))
    assert "requests to Consul:" in verbose.output and "GET /v1/agent/services" in verbose.output
    rendered = run_cli(consul, "render", "-q", "--no-cache", str(path))
    assert rendered.exit_code == 0 and "wrote" not in rendered.output
    assert run_cli(consul, "destroy", "--yes", "-q", str(path)).exit_code == 0


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_scripts(consul: DevAgent, shell: str) -> None:
    result = run_cli(consul, "completion", shell)
    assert result.exit_code == 0 and "_CONSUL_MANIFEST_COMPLETE" in result.output


def test_every_command_shows_an_example_in_its_help(consul: DevAgent) -> None:
    for name in sorted(cli.commands):
        result = run_cli(consul, name, "--help")
        assert result.exit_code == 0, name
        assert "Example" in result.output, f"{name} --help has no example"
