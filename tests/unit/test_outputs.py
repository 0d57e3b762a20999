"""Renderers and the atomic writer: shell-safe env files, a reader never sees a partial file, a failed write keeps
the old one."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from manifest_runner.errors import OutputError
from manifest_runner.resolve import renderers
from manifest_runner.resolve.renderers import render, render_env, shell_quote
from manifest_runner.resolve.result import Resolved
from manifest_runner.resolve.writer import write_atomic
from tests.budget import examples


def resolved(**values: str) -> list[Resolved]:
    return [Resolved(name, value, "consul") for name, value in values.items()]


@settings(max_examples=examples(200), deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40))
def test_shell_quoting_round_trips_through_a_real_shell(value: str) -> None:
    script = f'X={shell_quote(value)}; printf %s "$X"'
    out = subprocess.run(["sh", "-c", script], capture_output=True, check=True).stdout
    assert out == value.encode()


def test_env_file_is_sorted_and_keeps_simple_values_bare() -> None:
    text = render_env(resolved(B="redis://10.0.0.1:6379", A="x y", C="50%,a=b@c:d/e"))
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    assert lines == ["A='x y'", "B=redis://10.0.0.1:6379", "C=50%,a=b@c:d/e"]


def test_optional_missing_values_are_left_out() -> None:
    text = render_env([Resolved("A", None, "none", optional=True), *resolved(B="1")])
    assert "A=" not in text
    assert "B=1" in text


def test_docker_format_refuses_newlines() -> None:
    assert "A=x y\n" in render(resolved(A="x y"), "docker")
    with pytest.raises(OutputError, match="newline"):
        render(resolved(A="x\ny"), "docker")


def test_json_and_yaml_documents() -> None:
    import json

    from ruamel.yaml import YAML

    items = resolved(A="1")
    assert json.loads(render(items, "json"))["dependencies"]["A"] == {"value": "1", "source": "consul"}
    assert YAML(typ="safe").load(render(items, "yaml"))["dependencies"]["A"]["value"] == "1"


def test_unchanged_bytes_are_not_rewritten(tmp_path: Path) -> None:
    target = tmp_path / "out.env"
    assert write_atomic(target, "A=1\n") is True
    inode = target.stat().st_ino
    assert write_atomic(target, "A=1\n") is False
    assert target.stat().st_ino == inode
    assert write_atomic(target, "A=2\n") is True
    assert target.read_text() == "A=2\n"


def test_mode_of_a_new_file_and_of_an_existing_one(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    write_atomic(fresh, "x", mode=0o640)
    assert fresh.stat().st_mode & 0o777 == 0o640
    existing = tmp_path / "existing"
    existing.write_text("old")
    existing.chmod(0o600)
    write_atomic(existing, "new", mode=0o644)
    assert existing.stat().st_mode & 0o777 == 0o600  # an existing file keeps its mode


def test_a_reader_never_sees_a_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "out.env"
    versions = [render_env(resolved(A=str(i) * 2000, B="tail")) for i in range(10)]
    write_atomic(target, versions[0])
    stop = threading.Event()
    seen: list[str] = []
    bad: list[str] = []

    def read() -> None:
        while not stop.is_set():
            text = target.read_text()
            seen.append(text[:1])
            if text not in versions:
                bad.append(text)

    reader = threading.Thread(target=read)
    reader.start()
    for i in range(1000):
        write_atomic(target, versions[i % 10])
    stop.set()
    reader.join()
    assert not bad, f"{len(bad)} partial or empty reads"
    assert len(seen) > 100


def make_read_only(folder: Path) -> None:
    """A folder nobody, root included, can create files in (chmod, or chattr +i for root)."""
    folder.chmod(0o555)
    probe = folder / ".probe"
    try:
        probe.write_text("x")
    except OSError:
        return
    probe.unlink()
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)], check=False).returncode:
        pytest.fail("cannot make a read-only folder here (running as root without chattr)")


def test_a_failed_write_keeps_the_old_file_and_says_so(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    target = folder / "out.env"
    target.write_text("A=old\n")
    make_read_only(folder)
    try:
        with pytest.raises(OutputError, match=r"cannot write .*out\.env: .*; the previous file is unchanged"):
            write_atomic(target, "A=new\n")
        assert target.read_text() == "A=old\n"
        assert [p.name for p in folder.iterdir()] == ["out.env"]  # no temporary file left behind
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=False, capture_output=True)
        folder.chmod(0o755)


def test_format_for_file_names() -> None:
    assert [renderers.format_for(n) for n in ("a.json", "b.YAML", "c.yml", ".env", "x")] == [
        "json",
        "yaml",
        "yaml",
        "env",
        "env",
    ]


def test_a_device_or_fifo_is_written_to_never_replaced(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    assert write_atomic(fifo, "A=1\n") is True
    reader.join(10)
    assert received == [b"A=1\n"]
    assert stat.S_ISFIFO(fifo.stat().st_mode)  # still a FIFO
    assert write_atomic("/dev/null", "x") is True
    assert stat.S_ISCHR(Path("/dev/null").stat().st_mode)


def test_a_symlink_is_followed_and_kept(tmp_path: Path) -> None:
    real = tmp_path / "real.env"
    real.write_text("old")
    link = tmp_path / "link.env"
    link.symlink_to(real)
    assert write_atomic(link, "new") is True
    assert link.is_symlink()
    assert real.read_text() == "new"
