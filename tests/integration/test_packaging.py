"""The wheel and the sdist install into fresh virtual environments, on every Python 3.11+ this machine has, and every
command runs from them against a real agent."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from manifest_runner.testing.devagent import DevAgent

pytestmark = pytest.mark.consul

ROOT = Path(__file__).resolve().parents[2]
UV = ROOT / ".cache" / "uv" / "bin" / "uv"
CANDIDATES = ("3.11", "3.12", "3.13")


def uv() -> str:
    found = str(UV) if UV.exists() else shutil.which("uv")
    if found is None:
        pytest.fail("no uv: scripts/test installs it into .cache/uv")
    return found


def interpreters() -> dict[str, str]:
    """Python 3.11+ interpreters on this machine (pyenv's, the system's, uv's), by minor version."""
    found: dict[str, str] = {}
    for minor in CANDIDATES:
        for candidate in (
            *sorted(Path("/root/.pyenv/versions").glob(f"{minor}.*/bin/python{minor}")),
            Path(f"/usr/bin/python{minor}"),
            Path(f"/usr/local/bin/python{minor}"),
        ):
            if candidate.exists():
                found[minor] = str(candidate)
                break
    found.setdefault(f"{sys.version_info.major}.{sys.version_info.minor}", sys.executable)
    return found


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([uv(), "build", "--quiet", "-o", str(out)], cwd=ROOT, check=True, timeout=600)
    return out


def install(dist: Path, python: str, artifact: str, folder: Path) -> Path:
    venv = folder / "venv"
    subprocess.run([uv(), "venv", "--quiet", "-p", python, str(venv)], check=True, timeout=300)
    package = next(dist.glob(artifact))
    subprocess.run(
        [uv(), "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"), str(package)],
        check=True,
        timeout=600,
    )
    return venv / "bin" / "consul-manifest"


def run(exe: Path, agent: DevAgent, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_") or k == "CONSUL_BIN"}
    env["CONSUL_HTTP_ADDR"] = agent.http_addr
    return subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_the_wheel_carries_the_license_the_typing_marker_and_complete_metadata(dist: Path) -> None:
    wheel = next(dist.glob("*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert any(n.endswith("licenses/LICENSE") for n in names) and "manifest_runner/py.typed" in names
    assert "License-Expression: MPL-2.0" in metadata and "Mozilla Public License" in (ROOT / "LICENSE").read_text()
    for field in ("Project-URL: Homepage", "Classifier: Typing :: Typed", "Requires-Python: >=3.11"):
        assert field in metadata
    assert "Description-Content-Type: text/markdown" in metadata


@pytest.mark.parametrize(("minor", "artifact"), [(m, "*.whl") for m in CANDIDATES] + [("3.11", "*.tar.gz")])
def test_every_command_runs_from_a_fresh_install(
    dist: Path, consul: DevAgent, tmp_path: Path, unique: str, minor: str, artifact: str
) -> None:
    python = interpreters().get(minor)
    if python is None:
        pytest.fail(f"no Python {minor} on this machine: the README says which are tested; update CANDIDATES")
    exe = install(dist, python, artifact, tmp_path)
    work = tmp_path / "work"
    shutil.copytree(ROOT / "examples", work)
    manifest = work / "billing.yaml"
    owner_env = {"POD_IP": "127.0.0.1", "HOSTNAME": "pkg"}
    os.environ.update(owner_env)
    try:
        assert run(exe, consul, "--version", cwd=work).stdout.startswith("consul-manifest ")
        for command in ("validate", "plan", "apply", "destroy", "render", "exec", "run", "import", "schema"):
            assert run(exe, consul, command, "--help", cwd=work).returncode == 0, command
        assert run(exe, consul, "validate", str(manifest), cwd=work).returncode == 0
        assert run(exe, consul, "schema", cwd=work).stdout.startswith("{")
        assert run(exe, consul, "completion", "bash", cwd=work).returncode == 0
        applied = run(exe, consul, "apply", str(manifest), cwd=work)
        assert applied.returncode == 0, applied.stderr
        assert run(exe, consul, "plan", "--detailed-exitcode", str(manifest), cwd=work).returncode == 0
        rendered = run(exe, consul, "render", "--no-cache", str(work / "nginx" / "nginx.yaml"), cwd=work)
        assert rendered.returncode == 0 or "nginx" in rendered.stderr
        executed = run(
            exe, consul, "exec", "--no-cache", str(manifest), "--", "sh", "-c", "echo $DATABASE_URL", cwd=work
        )
        assert executed.returncode == 0 and executed.stdout.strip(), executed.stderr
        imported = run(exe, consul, "import", "--owner", f"pkg-{unique}", "--kv-prefix", "billing/", cwd=work)
        assert imported.returncode == 0 and "enforce:" in imported.stdout
        assert run(exe, consul, "destroy", "--yes", str(manifest), cwd=work).returncode == 0
    finally:
        for name in owner_env:
            os.environ.pop(name, None)


@pytest.mark.parametrize("minor", [m for m in CANDIDATES if m != f"{sys.version_info.major}.{sys.version_info.minor}"])
def test_the_unit_suite_passes_on_the_other_pythons(dist: Path, tmp_path: Path, minor: str) -> None:
    """The full suite runs on the locked interpreter; the unit suite (every pure module, the transport seam) runs on
    each other Python 3.11+ of this machine, from a fresh install of the wheel and the test tools."""
    python = interpreters().get(minor)
    if python is None:
        pytest.fail(f"no Python {minor} on this machine: the README says which are tested; update CANDIDATES")
    exe = install(dist, python, "*.whl", tmp_path)
    venv_python = exe.with_name("python")
    subprocess.run(
        [uv(), "pip", "install", "--quiet", "--python", str(venv_python), "pytest", "hypothesis"],
        check=True,
        timeout=600,
    )
    result = subprocess.run(
        [str(venv_python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=", "tests/unit"],
        cwd=ROOT,
        env={**os.environ, "CONSUL_MANIFEST_QUICK": "1"},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:]
