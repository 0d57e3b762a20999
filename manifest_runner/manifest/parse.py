"""YAML text -> plain values with the line and column of every key and value (ruamel.yaml, round-trip).

Duplicate keys are refused; ``${VAR}`` is interpolated on the way (see :mod:`.interpolate`); a node and depth budget
stops alias bombs and deep nesting. Every problem is located.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from datetime import date
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq, TaggedScalar
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from manifest_runner.errors import ManifestError, Problem
from manifest_runner.manifest.interpolate import InterpolationError, interpolate
from manifest_runner.manifest.locations import PathKey, Positions, format_path
from manifest_runner.manifest.screen import MAX_DEPTH

MAX_NODES = 100_000


def positions_of(text: str, name: str) -> Positions:
    """Line and column of every part of a manifest that is known to parse (no interpolation needed)."""
    converter = Converter(name, None)
    converter.convert(parse_yaml(text, name))
    return converter.positions()


def decode(data: bytes, name: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        col = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise ManifestError(
            [Problem(name, line, col, "", f"not UTF-8: byte 0x{data[err.start]:02x} cannot be decoded")]
        ) from None
    return text.removeprefix("\ufeff")


def parse_yaml(text: str, name: str) -> Any:
    yaml = YAML(typ="rt", pure=True)
    yaml.allow_duplicate_keys = False
    try:
        with warnings.catch_warnings():  # a redefined anchor is legal YAML: no warning text on a user's terminal
            warnings.simplefilter("ignore")
            return yaml.load(text)
    except MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        message = " ".join(part for part in (err.context, err.problem) if part)
        if "duplicate key" in (err.problem or ""):
            message = (err.problem or "").split(" with value")[0]
            message += " (a key may appear only once in a map)"
        raise ManifestError([Problem(name, line, col, "", f"invalid YAML: {message}")]) from None
    except YAMLError as err:  # e.g. ReaderError: control characters, which ruamel locates by character offset
        position = getattr(err, "position", None)
        line, col = _line_col(text, position) if isinstance(position, int) else (1, 1)
        reason = str(err).split("\n", 1)[0]
        raise ManifestError([Problem(name, line, col, "", f"invalid YAML: {reason}")]) from None
    except RecursionError:
        raise ManifestError([Problem(name, 1, 1, "", "invalid YAML: nesting is too deep")]) from None


def _line_col(text: str, offset: int) -> tuple[int, int]:
    line = text.count("\n", 0, offset) + 1
    return line, offset - (text.rfind("\n", 0, offset) + 1) + 1


class _TooBigError(Exception):
    pass


class Converter:
    """ruamel round-trip nodes -> plain values, recording positions and interpolating ``${VAR}``."""

    def __init__(self, name: str, environ: Mapping[str, str] | None) -> None:
        self.name = name
        self.environ = environ
        self.values: dict[PathKey, tuple[int, int]] = {}
        self.keys: dict[PathKey, tuple[int, int]] = {}
        self.problems: list[Problem] = []
        self.failed_paths: list[PathKey] = []
        self.nodes = 0
        self.too_big = False

    def positions(self) -> Positions:
        return Positions(self.name, self.values, self.keys)

    def convert(self, document: CommentedMap) -> Any:
        self.values[()] = (document.lc.line + 1, document.lc.col + 1)
        return self.plain(document)

    def plain(self, document: Any) -> Any:
        """Plain values (interpolated), within the node and depth budgets; positions recorded when known."""
        try:
            return self._walk(document, ())
        except _TooBigError as err:
            self.problems.append(Problem(self.name, 1, 1, "", str(err)))
            self.too_big = True
            return {}

    def _walk(self, node: Any, path: PathKey, ancestors: tuple[int, ...] = ()) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _TooBigError(f"the document expands to more than {MAX_NODES:,} values (an alias bomb?)")
        if len(path) > MAX_DEPTH:
            raise _TooBigError(f"the document nests deeper than {MAX_DEPTH} levels")
        if isinstance(node, dict | list):
            if id(node) in ancestors:
                return self._refuse(path, "an alias here refers to a node it is in")
            tag = getattr(getattr(node, "tag", None), "value", None)
            if tag is not None:
                return self._refuse(path, f"YAML tags are not supported ({tag}); remove it")
            ancestors = (*ancestors, id(node))
        if isinstance(node, dict):
            out: dict[Any, Any] = {}
            own = node.lc.data if isinstance(node, CommentedMap) and node.lc.data is not None else {}
            for key, value in node.items():
                name = self._key(key, path, own.get(key))
                child = (*path, name)
                if key in own:
                    line, col, vline, vcol = own[key]
                    self.keys[child] = (line + 1, col + 1)
                    # an empty value ("key:" and nothing) is located by its key, not by the next token
                    self.values[child] = (line + 1, col + 1) if value is None else (vline + 1, vcol + 1)
                out[name] = self._walk(value, child, ancestors)
            return out
        if isinstance(node, list):
            items: list[Any] = []
            own_items = node.lc.data if isinstance(node, CommentedSeq) and node.lc.data is not None else {}
            for index, value in enumerate(node):
                child = (*path, index)
                if index in own_items:
                    line, col = own_items[index][:2]
                    self.values[child] = (line + 1, col + 1)
                items.append(self._walk(value, child, ancestors))
            return items
        if isinstance(node, TaggedScalar):
            return self._refuse(path, f"YAML tags are not supported ({node.tag.value}); quote the value instead")
        return self._scalar(node, path)

    def _refuse(self, path: PathKey, message: str) -> None:
        line, col = self.values.get(path, (1, 1))
        self.problems.append(Problem(self.name, line, col, format_path(path), message))
        self.failed_paths.append(path)

    def _key(self, key: Any, path: PathKey, where: Any) -> Any:
        """A map key: text (interpolated), or a number or boolean for the validators to name; never a list or map."""
        if isinstance(key, str):
            if self.environ is None or "$" not in key:
                return str(key)
            try:
                return interpolate(str(key), self.environ)
            except InterpolationError as err:
                self._refuse_at(where, path, str(err))
                return str(key)
        if isinstance(key, bool) or key is None or isinstance(key, int | float):
            return _scalar_key(key)
        self._refuse_at(where, path, "a map key must be text, not a list or a map")
        return f"<key {len(self.problems)}>"

    def _refuse_at(self, where: Any, path: PathKey, message: str) -> None:
        line, col = (where[0] + 1, where[1] + 1) if where else self.values.get(path, (1, 1))
        self.problems.append(Problem(self.name, line, col, format_path(path), message))
        self.failed_paths.append(path)

    def _scalar(self, node: Any, path: PathKey) -> Any:
        if isinstance(node, bool) or node is None:
            return node
        if isinstance(node, int):
            return int(node)
        if isinstance(node, float):
            return float(node)
        if isinstance(node, str):
            if self.environ is None:
                return str(node)
            try:
                return interpolate(str(node), self.environ)
            except InterpolationError as err:
                line, col = self.values.get(path, (1, 1))
                self.problems.append(Problem(self.name, line, col, format_path(path), str(err)))
                self.failed_paths.append(path)
                return str(node)
        if isinstance(node, date):
            return node  # validators say "quote it": a date is not a value Consul can hold as typed
        return node


def _scalar_key(key: bool | int | float | None) -> Any:
    if isinstance(key, bool) or key is None:
        return key
    if isinstance(key, int):
        return int(key)
    return float(key)
