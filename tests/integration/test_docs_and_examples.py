"""The README and the examples cannot rot: every example is applied to a real agent, every manifest in the README
validates, its Python runs, its sample outputs are what the commands print, and CI runs the README's test command."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from manifest_runner.manifest.loader import load_manifests
from manifest_runner.testing.devagent import DevAgent
from tests.integration.helpers import run_cli, services

pytestmark = pytest.mark.consul

ROOT = Path(__file__).parent.parent.parent
README = (ROOT / "README.md").read_text()
ENV = {"POD_IP": "127.0.0.1", "HOSTNAME": "local"}


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, re.S)


def test_ci_runs_the_readme_test_command_as_written() -> None:
    quick_start = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    commands = [line.split("#")[0].strip() for line in blocks("sh")[0].splitlines() if line.strip()]
    assert commands == ["./scripts/demo", "./scripts/test"]
    assert "./scripts/demo" in quick_start
    assert "\n./scripts/test\n" in (ROOT / ".ci" / "run").read_text()
    for script in ("scripts/demo", "scripts/test", "scripts/get-consul", ".ci/run"):
        assert (ROOT / script).stat().st_mode & 0o111, script


def test_the_readme_manifest_is_valid(tmp_path: Path) -> None:
    (manifest,) = [b for b in blocks("yaml") if "version: 1" in b]
    path = tmp_path / "readme.yaml"
    path.write_text(manifest)
    loaded = load_manifests([path], ENV)
    assert loaded.manifests[0].owner == "billing"


EXAMPLES = sorted(p for p in (ROOT / "examples").glob("**/*.yaml") if "\nversion: 1\n" in "\n" + p.read_text())
"""Every manifest among the examples (Kubernetes and CI files are ``.yml``, and tested in test_deployment.py)."""


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT / "examples")))
def test_each_example_applies_plans_clean_renders_and_destroys(
    fresh_consul: DevAgent, tmp_path: Path, example: Path
) -> None:
    if example.parent != ROOT / "examples":  # an example with its own folder (templates)
        shutil.copytree(example.parent, tmp_path / example.parent.name)
        copy = tmp_path / example.parent.name / example.name
    else:
        copy = tmp_path / example.name
        shutil.copy(example, copy)
    env = {**ENV, "CONSUL_MANIFEST_CACHE_DIR": str(tmp_path / "cache")}
    applied = run_cli(fresh_consul, "apply", str(copy), extra_env=env)
    assert applied.exit_code == 0, applied.output
    assert run_cli(fresh_consul, "plan", "--detailed-exitcode", str(copy), extra_env=env).exit_code == 0
    rendered = run_cli(fresh_consul, "render", str(copy), extra_env=env)
    assert rendered.exit_code == 0, rendered.output
    destroyed = run_cli(fresh_consul, "destroy", "--yes", str(copy), extra_env=env)
    assert destroyed.exit_code == 0, destroyed.output
    assert services(fresh_consul) == {}


def test_the_readme_sample_outputs_are_real(
    fresh_consul: DevAgent, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    samples = [b for b in blocks("text") if b.startswith("$ consul-manifest")]
    assert len(samples) == 2
    env = {**ENV, "CONSUL_MANIFEST_CACHE_DIR": str(tmp_path / "cache")}

    examples = tmp_path / "examples"
    examples.mkdir()
    billing = examples / "billing.yaml"
    shutil.copy(ROOT / "examples" / "billing.yaml", billing)
    assert run_cli(fresh_consul, "apply", str(billing), extra_env=env).exit_code == 0
    billing.write_text(
        billing.read_text()
        .replace("v2.3.1", "v2.4.0")
        .replace('version: "2.3.1"', 'version: "2.4.0"')
        .replace("cache/ttl: 3600", "cache/ttl: 7200")
    )
    plan = run_cli(fresh_consul, "plan", "examples/billing.yaml", extra_env=env)
    assert_sample(samples[0], plan.output, tmp_path)

    quickstart = examples / "quickstart.yaml"
    shutil.copy(ROOT / "examples" / "quickstart.yaml", quickstart)
    assert run_cli(fresh_consul, "apply", str(quickstart), extra_env=env).exit_code == 0
    rendered = run_cli(fresh_consul, "render", "examples/quickstart.yaml", extra_env=env)
    shown = rendered.output + "$ cat examples/.env.consul\n" + (examples / ".env.consul").read_text()
    assert_sample(samples[1], shown, tmp_path)


def assert_sample(sample: str, output: str, folder: Path) -> None:
    expected = [line for line in sample.splitlines() if not line.startswith("$ consul-manifest")]
    actual = [line.replace(f"{folder}/", "") for line in output.splitlines()]
    assert actual == expected, "\n".join(actual)


def test_the_readme_python_runs(consul_env: DevAgent) -> None:
    (code,) = blocks("python")
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102
    assert namespace["db_url"] == "localhost:5432"  # no database-service registered: the fallback
