"""py-consul's own API test suite, run against real dev agents twice: with py-consul's client, and with ours.

    python -m tests.pyconsul_suite.harness          (alone; CONSUL_BIN names the agent binary)

1. The sdist of the py-consul version ``uv.lock`` pins is fetched with pip (into ``.cache/py-consul``) and checked
   against the lock's sha256; its tests are never copied into this repository.
2. Its ``tests/`` (``conftest.py``, ``utils.py``, ``api/``) are extracted to a temporary folder, beside a root
   conftest of ours (``rootconftest.py``: the same fixtures on ``consul agent -dev`` instead of Docker).
3. ``tests/api`` runs twice (``CM_PYCONSUL_MODE=native``, then ``ours``), each test's outcome read from JUnit XML.
4. A regression is a test that passes with py-consul's client and fails with ours. Tests that fail in both runs
   (they need a newer Consul than the agent's) are reported, not counted.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CACHE = ROOT / ".cache" / "py-consul"


def locked() -> tuple[str, str]:
    """(version, sdist sha256) of py-consul in uv.lock."""
    text = (ROOT / "uv.lock").read_text()
    block = text.split('name = "py-consul"\n', 1)[1].split("[[package]]", 1)[0]
    version = re.search(r'^version = "([^"]+)"', block, re.MULTILINE)
    digest = re.search(r'sdist = \{[^}]*hash = "sha256:([0-9a-f]{64})"', block)
    if version is None or digest is None:
        raise RuntimeError("py-consul's version or sdist hash is not in uv.lock")
    return version.group(1), digest.group(1)


def fetch() -> Path:
    """The locked sdist, fetched with pip once, its hash checked every time."""
    version, digest = locked()
    CACHE.mkdir(parents=True, exist_ok=True)
    target = CACHE / f"py_consul-{version}.tar.gz"
    if not target.exists():
        subprocess.run(
            [
                *(sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary=:all:"),
                *("--disable-pip-version-check", "-q", "-d", str(CACHE), f"py-consul=={version}"),
            ],
            check=True,
            timeout=300,
        )
    if hashlib.sha256(target.read_bytes()).hexdigest() != digest:
        target.unlink()
        raise RuntimeError(f"{target.name} does not match the sha256 in uv.lock; it was removed")
    return target


def prepare(sdist: Path, folder: Path) -> Path:
    """Extract the suite's tests and put our root conftest beside them; returns the folder to run in."""
    prefix = sdist.name.removesuffix(".tar.gz") + "/tests/"
    with tarfile.open(sdist) as archive:
        members = [m for m in archive.getmembers() if m.name.startswith(prefix) and m.isfile()]
        for member in members:
            relative = member.name[len(prefix) :]
            if not (relative in ("__init__.py", "conftest.py", "utils.py") or relative.startswith("api/")):
                continue
            destination = folder / "tests" / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            source = archive.extractfile(member)
            if source is not None:
                destination.write_bytes(source.read())
    shutil.copy(Path(__file__).with_name("rootconftest.py"), folder / "conftest.py")
    return folder


FAILURES: dict[str, dict[str, str]] = {}
"""mode -> test id -> the first lines of its failure, as the JUnit report gives it (for the summary)."""


def run(folder: Path, mode: str, workers: int = 2, only: list[str] | None = None) -> dict[str, str]:
    """Run ``tests/api`` (or the tests ``only`` names) in ``mode``; test id -> ``passed``, ``failed`` or
    ``skipped``."""
    report = folder / f"{mode}{'-again' if only else ''}.xml"
    selected = [_node_id(name) for name in only] if only else ["tests/api"]
    env = {**os.environ, "CM_PYCONSUL_MODE": mode, "PYTHONPATH": f"{folder}{os.pathsep}{ROOT}"}
    env.pop("CONSUL_HTTP_TOKEN", None)
    subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", str(workers)),
            *("--rootdir", str(folder), "-o", "addopts=", f"--junitxml={report}", *selected),
        ],
        cwd=folder,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
        timeout=1200,
    )
    outcomes: dict[str, str] = {}
    for case in ET.parse(report).getroot().iter("testcase"):  # noqa: S314 - our own pytest's report
        name = f"{case.get('classname')}::{case.get('name')}"
        failure = case.find("failure")
        if failure is None:
            failure = case.find("error")
        if failure is not None:
            outcomes[name] = "failed"
            text = (failure.get("message") or "") + "\n" + (failure.text or "")
            FAILURES.setdefault(mode, {})[name] = "\n".join(text.strip().splitlines()[-12:])
        elif case.find("skipped") is not None:
            outcomes[name] = "skipped"
        else:
            outcomes[name] = "passed"
    return outcomes


def _node_id(name: str) -> str:
    """``tests.api.test_kv.TestKV::test_x`` (a JUnit id) -> ``tests/api/test_kv.py::TestKV::test_x``."""
    classname, _, test = name.partition("::")
    parts = classname.split(".")
    if parts[-1][:1].isupper():
        return f"{'/'.join(parts[:-1])}.py::{parts[-1]}::{test}"
    return f"{'/'.join(parts)}.py::{test}"


@dataclass
class Comparison:
    native: dict[str, str]
    ours: dict[str, str]
    regressions: list[str] = field(default_factory=list)
    both_fail: list[str] = field(default_factory=list)
    only_ours_pass: list[str] = field(default_factory=list)
    flaky: list[str] = field(default_factory=list)
    """Failed with ours once, then passed with ours when run again alone: reported, not counted."""

    def summary(self) -> str:
        passed = sum(1 for v in self.ours.values() if v == "passed")
        lines = [
            f"py-consul's tests/api: {len(self.native)} tests; with py-consul's client "
            f"{sum(1 for v in self.native.values() if v == 'passed')} pass, with ours {passed} pass",
            f"regressions (pass with py-consul's client, fail with ours): {len(self.regressions)}",
            *(f"  {name}\n{_indented(FAILURES.get('ours', {}).get(name, ''))}" for name in self.regressions),
            f"fail in both runs (need a newer Consul than the agent's; reported, not counted): {len(self.both_fail)}",
            *(f"  {name}" for name in self.both_fail),
        ]
        if self.flaky:
            lines.append(f"failed once with ours, passed when run again (reported, not counted): {len(self.flaky)}")
            lines += [f"  {name}\n{_indented(FAILURES.get('ours', {}).get(name, ''))}" for name in self.flaky]
        if self.only_ours_pass:
            lines.append(f"pass only with ours: {len(self.only_ours_pass)}")
            lines += [f"  {name}" for name in self.only_ours_pass]
        return "\n".join(lines)


def _indented(text: str) -> str:
    return "\n".join(f"      {line}" for line in text.splitlines())


def compare(native: dict[str, str], ours: dict[str, str]) -> Comparison:
    result = Comparison(native, ours)
    for name in sorted(set(native) | set(ours)):
        a, b = native.get(name, "missing"), ours.get(name, "missing")
        if a == "passed" and b != "passed":
            result.regressions.append(name)
        elif a == "failed" and b == "failed":
            result.both_fail.append(name)
        elif a != "passed" and b == "passed":
            result.only_ours_pass.append(name)
    return result


def run_suite(workers: int = 2) -> Comparison:
    sdist = fetch()
    with tempfile.TemporaryDirectory(prefix="py-consul-suite-") as tmp:
        folder = prepare(sdist, Path(tmp))
        comparison = compare(run(folder, "native", workers), run(folder, "ours", workers))
        if comparison.regressions:  # a fresh agent per test, but timing-sensitive tests: once more, alone
            again = run(folder, "ours", 1, only=comparison.regressions)
            comparison.flaky = [name for name in comparison.regressions if again.get(name) == "passed"]
            comparison.regressions = [name for name in comparison.regressions if name not in comparison.flaky]
        return comparison


if __name__ == "__main__":
    comparison = run_suite()
    print(comparison.summary())
    sys.exit(1 if comparison.regressions else 0)
