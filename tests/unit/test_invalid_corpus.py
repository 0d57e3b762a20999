"""Every manifest of the broken corpus is refused with exit 3, located problems and no traceback."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from manifest_runner.cli import EXIT_INVALID, cli

CORPUS = Path(__file__).parent.parent / "corpus" / "invalid"
LOCATED = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<rest>.*)$")


def expectations() -> dict[str, tuple[str, str, str]]:
    found: dict[str, tuple[str, str, str]] = {}
    for line in (CORPUS / "EXPECTATIONS.txt").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        name, rest = line.split(": ", 1)
        where, rest = rest.split(" ", 1)
        path, fragment = rest.split(": ", 1)
        found[name] = (where, "" if path == "-" else path, fragment)
    return found


EXPECTED = expectations()


def test_corpus_is_large_and_every_file_has_an_expectation() -> None:
    files = sorted(p.name for p in CORPUS.glob("*.yaml"))
    assert len(files) >= 40
    assert sorted(EXPECTED) == files


def validate(*paths: str | Path) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["validate", *map(str, paths)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.output


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_broken_manifest_is_refused_with_its_location(name: str) -> None:
    where, path, fragment = EXPECTED[name]
    code, output = validate(CORPUS / name)
    assert code == EXIT_INVALID, output
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if not line.startswith("invalid: ")]
    assert lines, output
    for line in lines:
        assert LOCATED.match(line), f"not file:line:col: {line!r}"
    first = LOCATED.match(lines[0])
    assert first is not None
    assert f"{first['line']}:{first['col']}" == where, output
    prefix = f"{path}: " if path else ""
    assert first["rest"].startswith(prefix), output
    assert fragment in first["rest"], output


def test_a_ten_megabyte_file_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text("version: 1\nkv:\n  seed:\n" + "".join(f"    k{i}: {'x' * 90}\n" for i in range(110_000)))
    assert big.stat().st_size > 10_000_000
    code, output = validate(big)
    assert code == EXIT_INVALID
    assert re.search(r"big\.yaml:1:1: file is [\d,]+ bytes; a manifest may be at most", output), output


def test_a_folder_without_manifests_is_refused(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a manifest")
    code, output = validate(tmp_path)
    assert code == EXIT_INVALID
    assert f"{tmp_path}: folder has no *.yaml or *.yml manifests" in output


def test_a_missing_path_is_refused(tmp_path: Path) -> None:
    code, output = validate(tmp_path / "nope.yaml")
    assert code == EXIT_INVALID
    assert "nope.yaml: no such file or folder" in output


def test_duplicate_ids_and_keys_across_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "version: 1\nowner: a\nservices:\n  - {name: api, id: api-1, port: 80}\nkv:\n  prefix: app/\n  seed: {x: 1}\n"
    )
    (tmp_path / "b.yaml").write_text(
        "version: 1\nowner: b\nservices:\n  - {name: api, id: api-1, port: 81}\nkv:\n  enforce: {app/x: 2}\n"
    )
    code, output = validate(tmp_path)
    assert code == EXIT_INVALID
    assert "b.yaml:4:17: services[0].id: service id 'api-1' is declared twice; first at" in output
    assert "a.yaml:4:" in output
    assert "b.yaml:6:13: kv.enforce.app/x: KV key 'app/x' is declared twice; first at" in output


def test_every_problem_of_a_file_is_reported_at_once(tmp_path: Path) -> None:
    manifest = tmp_path / "many.yaml"
    manifest.write_text(
        "version: 1\nservices:\n  - name: api\n    port: 0\n    tgs: []\n"
        "    checks:\n      - ttl: 5\nkv:\n  seed: {a: null}\nbogus: 1\n"
    )
    code, output = validate(manifest)
    assert code == EXIT_INVALID
    problems = [line for line in output.splitlines() if LOCATED.match(line)]
    assert [p.split(": ")[0] for p in problems] == [
        f"{manifest}:4:11",
        f"{manifest}:5:5",
        f"{manifest}:7:14",
        f"{manifest}:9:10",
        f"{manifest}:10:1",
    ]
    assert "invalid: 5 problems" in output
