"""Templates and envconsul's way against a real agent: an nginx upstream re-rendered by `run` when an instance is
added, removed or turns critical, its reload command run once per quiet period; validation at `validate` time;
missing keys and a Consul that is down; variables from a KV prefix and a service in `exec`, pristine or not."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest

from manifest_runner.testing.devagent import DevAgent
from tests.integration.helpers import deregister, kv_put, register, run_cli, run_process, write
from tests.integration.runproc import RunProcess, wait_for
from tests.integration.test_render import set_status

pytestmark = pytest.mark.consul

UPSTREAM = """upstream web {
{% for s in service(NAME) %}    server {{ s.address }}:{{ s.port }};
{% else %}    server 127.0.0.1:65535 down;
{% endfor %}}
"""


def web(agent: DevAgent, name: str, number: int) -> None:
    register(
        agent,
        {
            "ID": f"{name}-{number}",
            "Name": name,
            "Address": "10.1.0.1",
            "Port": 8000 + number,
            "Check": {"CheckID": f"service:{name}-{number}", "TTL": "10m", "Status": "passing"},
        },
    )


def servers(path: Path) -> list[str]:
    return re.findall(r"server (\S+);", path.read_text()) if path.exists() else []


def test_run_re_renders_an_nginx_upstream_and_reloads_once_per_quiet_period(
    consul: DevAgent, tmp_path: Path, unique: str
) -> None:
    name = f"web-{unique}"
    for number in (1, 2, 3):
        web(consul, name, number)
    (tmp_path / "upstream.tmpl").write_text(UPSTREAM)
    path = write(
        tmp_path,
        "m.yaml",
        f"""
version: 1
owner: nginx-{unique}
dependencies:
  NAME: {{kv: nginx-{unique}/name, fallback: {name}}}
outputs:
  templates:
    - source: upstream.tmpl
      destination: upstream.conf
      command: "echo reload >> reloads.log"
      wait: {{min: 700ms, max: 5s}}
""",
    )
    out, reloads = tmp_path / "upstream.conf", tmp_path / "reloads.log"

    def reload_count() -> int:
        return len(reloads.read_text().splitlines()) if reloads.exists() else 0

    with RunProcess(consul.http_addr, ["--no-cache", "--dependency-resync", "3600", str(path)], tmp_path) as run:
        wait_for(lambda: len(servers(out)) == 3, what="the first render", timeout=30)
        wait_for(lambda: reload_count() == 1, what="its command (run just after the file is written)")

        web(consul, name, 4)  # added
        wait_for(lambda: "10.1.0.1:8004" in servers(out), what="the new instance")
        wait_for(lambda: reload_count() == 2, what="one reload")

        deregister(consul, f"{name}-1")  # removed
        wait_for(lambda: "10.1.0.1:8001" not in servers(out), what="the removal")
        wait_for(lambda: reload_count() == 3, what="one reload")

        set_status(consul, f"{name}-2", "critical")  # turns critical
        wait_for(lambda: "10.1.0.1:8002" not in servers(out), what="the critical instance out")
        wait_for(lambda: reload_count() == 4, what="one reload")

        web(consul, name, 5)  # a burst, within the quiet period: one render, one reload
        web(consul, name, 6)
        deregister(consul, f"{name}-3")
        wait_for(lambda: sorted(servers(out)) == ["10.1.0.1:8004", "10.1.0.1:8005", "10.1.0.1:8006"], what="burst")
        wait_for(lambda: reload_count() >= 5, what="the burst's reload")
        assert run.stop() == 0
    assert reload_count() == 5, reloads.read_text()


def test_templates_are_validated_at_validate_time(consul: DevAgent, tmp_path: Path) -> None:
    (tmp_path / "broken.tmpl").write_text("line one\n{% for x in service('a') %}\n{{ x.port }\n")
    (tmp_path / "unknown.tmpl").write_text("ok\n  {{ secret('x') }} and {{ DB }}\n")
    path = write(
        tmp_path,
        "m.yaml",
        """
version: 1
dependencies:
  DB: {service: db, fallback: "x"}
outputs:
  templates:
    - {source: broken.tmpl, destination: a.conf}
    - {source: unknown.tmpl, destination: b.conf}
    - {source: missing.tmpl, destination: c.conf}
""",
    )
    result = run_cli(consul, "validate", str(path))
    assert result.exit_code == 3, result.output
    assert f"{tmp_path / 'broken.tmpl'}:3:1: template syntax" in result.output
    assert f"{tmp_path / 'unknown.tmpl'}:2:6: unknown name 'secret'" in result.output
    assert "outputs.templates[2].source" in result.output and "missing.tmpl" in result.output


def test_a_missing_key_fails_the_render_and_consul_down_uses_the_last_answers(
    consul: DevAgent, tmp_path: Path, unique: str
) -> None:
    (tmp_path / "app.tmpl").write_text("db={{ key('cfg-" + unique + "/db') }} mode={{ key_or_default('x/y', 'z') }}\n")
    path = write(
        tmp_path,
        "m.yaml",
        "version: 1\noutputs:\n  templates: [{source: app.tmpl, destination: app.conf}]\n",
    )
    out = tmp_path / "app.conf"
    cache = str(tmp_path / "cache")
    missing = run_process(consul.http_addr, "render", "--cache-dir", cache, str(path))
    assert missing.returncode == 1 and "no such key" in missing.stderr and "app.tmpl:1" in missing.stderr
    assert not out.exists()
    kv_put(consul, f"cfg-{unique}/db", b"db.internal")
    assert run_process(consul.http_addr, "render", "--cache-dir", cache, str(path)).returncode == 0
    assert out.read_text() == "db=db.internal mode=z\n"
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{silent.getsockname()[1]}"  # nobody listens: Consul is down
        down = run_process(address, "render", "--cache-dir", cache, "--timeout", "1", str(path))
    assert down.returncode == 0, down.stderr
    assert "last known good answer" in down.stderr
    assert out.read_text() == "db=db.internal mode=z\n"


def test_envconsul_variables_in_exec_pristine_or_not(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    prefix = f"envc-{unique}/"
    kv_put(consul, f"{prefix}db/host", b"db.internal")
    kv_put(consul, f"{prefix}db/pool-size", b"20")
    register(consul, {"ID": f"cache-{unique}", "Name": f"cache-{unique}", "Address": "10.2.0.9", "Port": 6379})
    path = write(
        tmp_path,
        "m.yaml",
        f"""
version: 1
env_from:
  - {{kv: {prefix}, prefix: APP_, upcase: true}}
  - {{service: cache-{unique}, name: CACHE, scheme: redis}}
""",
    )
    dump = tmp_path / "env.out"
    plain = run_process(consul.http_addr, "exec", "--no-cache", str(path), "--", "sh", "-c", f"env > {dump}")
    assert plain.returncode == 0, plain.stderr
    seen = dict(line.split("=", 1) for line in dump.read_text().splitlines() if "=" in line)
    assert seen["APP_DB_HOST"] == "db.internal" and seen["APP_DB_POOL_SIZE"] == "20"
    assert (seen["CACHE_ADDRESS"], seen["CACHE_PORT"], seen["CACHE_URL"]) == (
        "10.2.0.9",
        "6379",
        "redis://10.2.0.9:6379",
    )
    assert "HOME" in seen or "PATH" in seen  # the usual environment is kept
    pristine = run_process(
        consul.http_addr, "exec", "--pristine", "--no-cache", str(path), "--", "sh", "-c", f"env > {dump}"
    )
    assert pristine.returncode == 0, pristine.stderr
    names = {line.split("=", 1)[0] for line in dump.read_text().splitlines() if "=" in line}
    ours = {"APP_DB_HOST", "APP_DB_POOL_SIZE", "CACHE_ADDRESS", "CACHE_PORT", "CACHE_URL"}
    assert ours <= names
    assert not (names - ours - {"PWD", "SHLVL", "_"}), names  # what sh itself sets, nothing else


def test_a_change_between_a_render_and_its_watches_is_not_lost(consul: DevAgent, tmp_path: Path, unique: str) -> None:
    """A template's watches start after the render whose reads they come from; a change in between is in their
    starting state, so it would never wake them. Once they are ready, what they cover is reported once."""
    from manifest_runner.config import ConsulConfig
    from manifest_runner.consul.base import Freshness
    from manifest_runner.consul.client import ConsulClient
    from manifest_runner.manifest.loader import load_manifests
    from manifest_runner.manifest.model import ServiceDependency
    from manifest_runner.run.watches import Watches

    name = f"gap-{unique}"
    web(consul, name, 1)
    path = write(tmp_path, "m.yaml", f"version: 1\nowner: gap-{unique}\n")
    client = ConsulClient(ConsulConfig.from_sources({"http_addr": consul.http_addr}, {}))
    reported: list[set[str]] = []
    watches = Watches(
        client, drift=None, on_dependencies=reported.append, on_beat=lambda *_: None, on_check_lost=lambda _: None
    )
    try:
        watches.start(load_manifests([path], {}), [])
        # ... the template was rendered here, reading one instance; then a second one is registered:
        web(consul, name, 2)
        key = f"{path}::@template:0#0"
        watches.set_extra({key: (ServiceDependency(service=name), Freshness(cached=True))})
        assert any(key in keys for keys in reported), reported  # read again, not left until the resync
        reported.clear()
        watches.set_extra({key: (ServiceDependency(service=name), Freshness(cached=True))})
        assert reported == []  # the same reads: nothing restarted, nothing reported
    finally:
        watches.close()
