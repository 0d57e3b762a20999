"""Manifest files -> validated :class:`ManifestSet`, or a :class:`ManifestError` listing every problem.

The pipeline for one file: read bytes (size cap) -> strict UTF-8 -> ruamel.yaml round-trip parse (keeps line and
column of every key and value; duplicate keys refused) -> plain Python values with a position table, ``${VAR}``
interpolation on the way (node budget against alias bombs) -> pydantic validation -> every error mapped back to
``file:line:col: path: message``. After every file is valid on its own, :mod:`.crosscheck` checks
what spans several places (duplicate ids and keys, also across files). Nothing is sent anywhere: loading is the
"validation first, all of it" step that runs before any request to Consul.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from manifest_runner.errors import ManifestError, Problem
from manifest_runner.manifest.crosscheck import consistency_problems
from manifest_runner.manifest.fields import Owner
from manifest_runner.manifest.loaded import LoadedManifest, ManifestSet
from manifest_runner.manifest.locations import PathKey, data_path, merge_same_place, problem_from_pydantic
from manifest_runner.manifest.model import Manifest
from manifest_runner.manifest.parse import Converter, decode, parse_yaml
from manifest_runner.manifest.screen import screen

__all__ = ["MANIFEST_SUFFIXES", "LoadedManifest", "ManifestSet", "load_manifests", "parse_manifest"]

MAX_FILE_BYTES = 1024 * 1024
MANIFEST_SUFFIXES = (".yaml", ".yml")


def manifest_files(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[Path], list[Problem]]:
    """Expand files and folders (``*.yaml`` / ``*.yml``, not recursive, sorted) into manifest files."""
    files: list[Path] = []
    problems: list[Problem] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in MANIFEST_SUFFIXES and p.is_file())
            if not found:
                problems.append(Problem(str(path), 0, 0, "", "folder has no *.yaml or *.yml manifests"))
            files.extend(found)
        elif path.is_file():
            files.append(path)
        elif path.exists():
            problems.append(Problem(str(path), 0, 0, "", "not a regular file or folder"))
        else:
            problems.append(Problem(str(path), 0, 0, "", "no such file or folder"))
    unique = list(dict.fromkeys(files))
    return unique, problems


def load_manifests(paths: Sequence[str | os.PathLike[str]], environ: Mapping[str, str] | None = None) -> ManifestSet:
    """Load and validate every manifest under ``paths``; raise :class:`ManifestError` with every problem found."""
    env = os.environ if environ is None else environ
    if not paths:
        raise ManifestError([Problem("<command line>", 0, 0, "", "no manifest path given")])
    files, problems = manifest_files(paths)
    loaded: list[LoadedManifest] = []
    for file in files:
        try:
            data = read_manifest_bytes(file)
        except ManifestError as err:
            problems.extend(err.problems)
            continue
        try:
            loaded.append(parse_manifest(data, file, env))
        except ManifestError as err:
            problems.extend(err.problems)
    if not problems:
        problems.extend(consistency_problems(loaded))
    for item in loaded:
        if item.manifest.outputs.templates:
            from manifest_runner.manifest.templating import template_problems  # Jinja2 only when there are templates

            known = set(item.manifest.dependencies)
            problems.extend(template_problems(item.folder, str(item.file), item.manifest.outputs.templates, known))
    if problems:
        raise ManifestError(problems)
    return ManifestSet(tuple(loaded))


def read_manifest_bytes(file: Path) -> bytes:
    """Read at most the size limit (plus one byte, to tell a too-large file)."""
    try:
        with file.open("rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as err:
        raise ManifestError([Problem(str(file), 0, 0, "", f"cannot read: {err.strerror or err}")]) from err
    if len(data) > MAX_FILE_BYTES:
        size = file.stat().st_size
        raise ManifestError(
            [Problem(str(file), 1, 1, "", f"file is {size:,} bytes; a manifest may be at most {MAX_FILE_BYTES:,}")]
        )
    return data


def parse_manifest(data: bytes, file: Path, environ: Mapping[str, str]) -> LoadedManifest:
    """Parse and validate one manifest's bytes (pure: no I/O).

    First the document's events are screened (:mod:`.screen`: depth, tags, recursive aliases, non-text keys) before
    any tree is built, and in the same pass, when libyaml reads the document, its plain values are built
    (:mod:`.fastbuild`). Then two paths, one result. The fast one validates those values; it serves every valid
    manifest libyaml can read. Anything it does not accept goes to the precise one, which parses with ruamel's
    round-trip loader to know the line and column of every key and value, and reports every problem at its place.
    """
    name = str(file)
    text = decode(data, name)
    screened = screen(text, name)
    if screened.problems:
        raise ManifestError(screened.problems)
    manifest = _fast_parse(screened.document, environ) if screened.built else None
    if manifest is None:
        manifest = _precise_parse(text, name, environ)
    owner = manifest.owner if manifest.owner is not None else file.stem
    if manifest.owner is None and not _valid_owner(owner):
        message = (
            f"the owner defaults to the file name {owner!r}, which is not a valid owner "
            "(letters, digits, '.', '_', '-'); set 'owner:'"
        )
        raise ManifestError([Problem(name, 1, 1, "owner", message)])
    return LoadedManifest(file=file, manifest=manifest, owner=owner, text=text)


def _fast_parse(document: Any, environ: Mapping[str, str]) -> Manifest | None:
    """Validation of the values the screen built from libyaml's events; ``None`` whenever anything is off (the
    precise path then says what and where)."""
    if not isinstance(document, dict):
        return None
    walker = Converter("", environ)
    plain = walker.plain(document)
    if walker.problems or walker.too_big:
        return None
    try:
        return Manifest.model_validate(plain)
    except ValidationError:
        return None


def _precise_parse(text: str, name: str, environ: Mapping[str, str]) -> Manifest:
    """The round-trip path: raises :class:`ManifestError` with every problem located (or returns the manifest)."""
    document = parse_yaml(text, name)
    if document is None:
        raise ManifestError([Problem(name, 1, 1, "", "the file is empty; a manifest starts with 'version: 1'")])
    if not isinstance(document, CommentedMap):
        kind = "list" if isinstance(document, CommentedSeq) else "single value"
        raise ManifestError([Problem(name, 1, 1, "", f"a manifest is a map with 'version: 1', not a {kind}")])
    converter = Converter(name, environ)
    plain = converter.convert(document)
    positions = converter.positions()
    problems = list(converter.problems)
    if converter.too_big:
        raise ManifestError(problems)
    try:
        manifest = Manifest.model_validate(plain)
    except ValidationError as err:
        found = [
            problem_from_pydantic(item, plain, positions)
            for item in err.errors(include_url=False, include_input=False)
            if not _under(data_path(item["loc"], plain), converter.failed_paths)
        ]
        problems.extend(merge_same_place(found))
    if problems:
        raise ManifestError(problems)
    return manifest


def _valid_owner(owner: str) -> bool:
    from pydantic import TypeAdapter

    try:
        TypeAdapter(Owner).validate_python(owner)
    except ValidationError:
        return False
    return True


def _under(path: PathKey, prefixes: Sequence[PathKey]) -> bool:
    return any(path[: len(prefix)] == prefix for prefix in prefixes)
