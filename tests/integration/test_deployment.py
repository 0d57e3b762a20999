"""The places users run it, as they would copy them: the pre-commit hook as pre-commit runs it, the GitOps CI script
(review, deploy, a deleted manifest pruned), the container's entrypoint as a process, the Kubernetes init
container and sidecar with their probes, and the systemd unit's readiness protocol; all against a real agent."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from manifest_runner.testing.devagent import DevAgent, free_port
from tests.integration.helpers import services, write
from tests.integration.runproc import RunProcess, wait_for

pytestmark = pytest.mark.consul

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
BIN = Path(sys.executable).parent


def environment(agent: DevAgent, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_") or k == "CONSUL_BIN"}
    return {**env, "CONSUL_HTTP_ADDR": agent.http_addr, "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}", **extra}


def test_the_pre_commit_hook_as_pre_commit_runs_it(consul: DevAgent, tmp_path: Path) -> None:
    [hook] = YAML(typ="safe").load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert hook["id"] == "consul-manifest-validate" and hook["language"] == "python"
    good = tmp_path / "consul" / "payments.yaml"
    good.parent.mkdir()
    shutil.copy(EXAMPLES / "gitops" / "consul" / "payments.yaml", good)
    bad = write(tmp_path / "consul", "broken.yaml", "version: 1\nservices: [{name: 'no spaces'}]\n")
    for path in (good, bad):
        assert re.search(hook["files"], str(path.relative_to(tmp_path)))  # pre-commit filters by its pattern
    argv = shlex.split(hook["entry"])
    ok = subprocess.run([*argv, str(good)], env=environment(consul), capture_output=True, text=True, check=False)
    assert ok.returncode == 0 and ok.stdout == "", ok.stderr  # --quiet: nothing on success
    failed = subprocess.run(
        [*argv, str(good), str(bad)], env=environment(consul), capture_output=True, text=True, check=False
    )
    assert failed.returncode == 3 and f"{bad}:2:" in failed.stderr


def test_the_gitops_script_reviews_deploys_and_prunes(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    repo = tmp_path / f"shop-{unique}"
    shutil.copytree(EXAMPLES / "gitops", repo / "ci")
    (repo / "ci" / "consul").rename(repo / "consul")
    env = environment(consul, MANIFESTS=str(repo / "consul"), SET=f"shop-{unique}", OUT=str(repo / "out"))
    for workflow in ("github-actions.yml", "gitlab-ci.yml"):
        text = (repo / "ci" / workflow).read_text()
        assert "ci/ci.sh review" in text and "ci/ci.sh deploy" in text  # the workflows run this very script

    def step(name: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["sh", str(repo / "ci" / "ci.sh"), name], cwd=repo, env=env, capture_output=True, text=True, check=False
        )

    review = step("review")
    assert review.returncode == 0, review.stderr
    assert json.loads((repo / "out" / "validate.json").read_text())["ok"]
    summary = (repo / "out" / "plan.md").read_text()
    assert "| + | service | `payments-api-ci` |" in summary
    assert json.loads((repo / "out" / "plan.json").read_text())["saved"]["request"]["set"] == f"shop-{unique}"
    assert "payments-api-ci" not in services(consul)  # review writes nothing

    deploy = step("deploy")
    assert deploy.returncode == 0, deploy.stderr
    assert json.loads((repo / "out" / "apply.json").read_text())["ok"]
    assert "payments-api-ci" in services(consul)

    (repo / "consul" / "payments.yaml").unlink()  # the manifest is deleted in a merge request
    (repo / "consul" / "placeholder.yaml").write_text("version: 1\nowner: placeholder\n")
    review = step("review")
    assert review.returncode == 0, review.stderr
    assert "| - | service | `payments-api-ci` |" in (repo / "out" / "plan.md").read_text()
    assert step("deploy").returncode == 0
    assert "payments-api-ci" not in services(consul)

    write(repo / "consul", "broken.yaml", "version: 1\nowner: [not, text]\n")
    assert step("review").returncode == 3  # an invalid manifest fails the merge request


def test_the_container_entrypoint_as_a_process(consul: DevAgent, tmp_path: Path) -> None:
    dockerfile = (EXAMPLES / "container" / "Dockerfile").read_text()
    entrypoint = json.loads(re.search(r"^ENTRYPOINT (.+)$", dockerfile, re.MULTILINE).group(1))  # type: ignore[union-attr]
    command = json.loads(re.search(r"^CMD (.+)$", dockerfile, re.MULTILINE).group(1))  # type: ignore[union-attr]
    assert re.search(r"^USER 10001$", dockerfile, re.MULTILINE)  # not root
    argv = [str(EXAMPLES / "container" / "app.yaml") if a == "/etc/consul-manifest/app.yaml" else a for a in entrypoint]
    argv = [sys.executable if a == "python" else a for a in [*argv, *command]]
    env = environment(consul, CONSUL_MANIFEST_CACHE_DIR=str(tmp_path / "cache"))
    result = subprocess.run(argv, env=env, capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "DATABASE_URL=postgresql://localhost:5432/shop"  # no postgres here: fallback


def test_the_kubernetes_init_container_and_sidecar_probes(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    documents = list(YAML(typ="safe").load_all((EXAMPLES / "kubernetes" / "deployment.yml").read_text()))
    config = next(d for d in documents if d["kind"] == "ConfigMap")
    deployment = next(d for d in documents if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    manifest_text = config["data"]["app.yaml"].replace("/run/consul-manifest/app.env", str(tmp_path / "app.env"))
    manifest = write(tmp_path, "app.yaml", manifest_text.replace("owner: shop-web", f"owner: shop-web-{unique}"))
    pod = {"POD_IP": "127.0.0.1", "POD_NAME": f"pod-{unique}"}
    env = environment(consul, CONSUL_MANIFEST_CACHE_DIR=str(tmp_path / "cache"), **pod)

    init = deployment["initContainers"][0]["command"]
    rendered = subprocess.run(
        [*init[:-1], str(manifest)], env=env, capture_output=True, text=True, check=False, timeout=60
    )
    assert rendered.returncode == 0, rendered.stderr
    assert "DATABASE_URL=postgresql://localhost:5432/shop" in (tmp_path / "app.env").read_text()

    sidecar = next(c for c in deployment["containers"] if c["name"] == "consul-manifest")
    port = free_port()
    args = [a.replace("9100", str(port)) for a in sidecar["command"][2:-1]]  # run --listen 0.0.0.0:<port>
    assert "0.0.0.0" in " ".join(args)  # noqa: S104 - any address, when asked explicitly (a pod IP probe)
    with RunProcess(consul.http_addr, [*args, str(manifest)], tmp_path, env=pod) as run:
        for probe in ("livenessProbe", "readinessProbe"):
            path = sidecar[probe]["httpGet"]["path"]
            wait_for(
                lambda p=path: urllib.request.urlopen(f"http://127.0.0.1:{port}{p}", timeout=2).status == 200,
                what=f"{probe} {path}",
            )
        assert f"shop-web-pod-{unique}" in services(consul)
        assert run.stop() == 0


def test_the_systemd_unit_is_notified_ready_reloading_and_stopping(
    consul: DevAgent, tmp_path: Path, unique: str
) -> None:
    unit = (EXAMPLES / "systemd" / "consul-manifest.service").read_text()
    assert "Type=notify" in unit and "ExecReload=/bin/kill -HUP $MAINPID" in unit
    app = (EXAMPLES / "systemd" / "app.service").read_text()
    manifest_text = (EXAMPLES / "systemd" / "shop-web.yaml").read_text()
    env_file = re.search(r"env_file: (\S+)", manifest_text).group(1)  # type: ignore[union-attr]
    assert f"EnvironmentFile=/run/consul-manifest/{env_file}" in app
    manifest = write(tmp_path, "shop-web.yaml", manifest_text.replace("shop-web-host", f"host-{unique}"))

    notify_path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(notify_path)
        sock.settimeout(30)
        command = shlex.split(re.search(r"^ExecStart=(.+)$", unit, re.MULTILINE).group(1))  # type: ignore[union-attr]
        args = [a.replace("9100", str(free_port())) for a in command[2:-1]]
        with RunProcess(consul.http_addr, [*args, str(manifest)], tmp_path, env={"NOTIFY_SOCKET": notify_path}) as run:
            first = sock.recv(4096).decode()
            assert first.startswith("READY=1") and (tmp_path / env_file).exists()
            run.process.send_signal(signal.SIGHUP)
            assert sock.recv(4096).decode() == "RELOADING=1"
            assert sock.recv(4096).decode() == "READY=1"
            run.process.send_signal(signal.SIGTERM)
            assert sock.recv(4096).decode() == "STOPPING=1"
            assert run.process.wait(30) == 0
