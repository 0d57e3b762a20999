"""Pydantic's validation errors -> problems a person can act on, at their ``file:line:col`` (pure).

A pydantic ``loc`` is mapped back to the place in the YAML (union tags and ``[key]`` markers dropped); "extra"
fields get a "did you mean"; patterns are explained in words; a value that fails every branch of a union gets one
problem, naming the specific complaints.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel

from manifest_runner.errors import Problem
from manifest_runner.manifest.fields import PATTERN_HELP
from manifest_runner.manifest.model import Manifest

PathKey = tuple[str | int, ...]


def format_path(path: PathKey) -> str:
    """``("services", 0, "port")`` -> ``services[0].port``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


@dataclass(frozen=True, slots=True)
class Positions:
    """Where each value and each mapping key of one document stands (1-based line and column)."""

    file: str
    values: Mapping[PathKey, tuple[int, int]]
    keys: Mapping[PathKey, tuple[int, int]]

    def of_value(self, path: PathKey) -> tuple[int, int]:
        """The position of the value at ``path``, or of its nearest located ancestor."""
        for end in range(len(path), -1, -1):
            found = self.values.get(path[:end])
            if found is not None:
                return found
        return (1, 1)

    def of_key(self, path: PathKey) -> tuple[int, int]:
        """The position of the key that names ``path`` (falls back to the value's position)."""
        return self.keys.get(path) or self.of_value(path)

    def problem(self, path: PathKey, message: str, *, at_key: bool = False) -> Problem:
        line, col = self.of_key(path) if at_key else self.of_value(path)
        return Problem(self.file, line, col, format_path(path), message)


def data_path(loc: Sequence[int | str], data: Any) -> PathKey:
    """Keep the parts of a pydantic ``loc`` that name places in the data.

    Dropped: union tags (``checks[0].http.interval`` is reported as ``checks[0].interval``), ``[key]`` markers and
    the names of union branches (``str``, ``list[str]``). A missing field keeps its name as the last part.
    """
    out: list[str | int] = []
    node = data
    for index, part in enumerate(loc):
        following = loc[index + 1] if index + 1 < len(loc) else None
        if isinstance(node, dict):
            if part == "[key]":
                continue
            if part in node:
                child = node[part]
                is_tag = (
                    following is not None and following in node and not (isinstance(child, dict) and following in child)
                )
                if not is_tag:
                    out.append(part)
                    node = child
                continue
            if following is None:
                out.append(part)  # a missing field
            continue
        if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            out.append(part)
            node = node[part]
            continue
        break
    return tuple(out)


def problem_from_pydantic(item: Mapping[str, Any], data: Any, positions: Positions) -> Problem:
    loc: tuple[int | str, ...] = tuple(item["loc"])
    path = data_path(loc, data)
    kind = item["type"]
    message = _tidy(str(item["msg"]))
    if kind == "extra_forbidden":
        field = path[-1] if path else loc[-1]
        message = f"unknown field {field!r}" + _suggestion(field, _fields_at(loc[:-1]))
        return positions.problem(path, message, at_key=True)
    if kind == "missing":
        line, col = positions.of_value(path[:-1])
        return Problem(positions.file, line, col, format_path(path), "required field is missing")
    if "[key]" in loc:
        return positions.problem(path, f"key: {message}", at_key=True)
    return positions.problem(path, message)


def merge_same_place(problems: list[Problem]) -> list[Problem]:
    """A value that fails every branch of a union gets one problem, naming each branch's complaint once."""
    merged: dict[tuple[str, int, int, str], list[str]] = {}
    for problem in problems:
        messages = merged.setdefault((problem.file, problem.line, problem.col, problem.path), [])
        if problem.message not in messages:
            messages.append(problem.message)
    out = []
    for (file, line, col, path), messages in merged.items():
        specific = [m for m in messages if not m.startswith("Input should be")]
        out.append(Problem(file, line, col, path, "; or ".join(specific or messages)))
    return out


def _tidy(message: str) -> str:
    message = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if message.startswith("String should match pattern '"):
        pattern = message.removeprefix("String should match pattern '").removesuffix("'")
        return PATTERN_HELP.get(pattern, message)
    return message


def _tagged() -> dict[str | int, type[BaseModel]]:
    from manifest_runner.manifest import checks, model

    return {
        "http": checks.HttpCheck,
        "tcp": checks.TcpCheck,
        "grpc": checks.GrpcCheck,
        "ttl": checks.TtlCheck,
        "service": model.ServiceDependency,
        "kv": model.KVDependency,
    }


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """A field's annotation -> (model, union of models as a tuple, or None; whether it is a list or dict)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    if origin is Annotated:
        return _unwrap(args[0])
    if origin in (list, dict):
        return _unwrap(args[-1])[0], True
    if origin in (Union, UnionType):
        members = [m for m in (_unwrap(a)[0] for a in args) if m is not None]
        if len(members) == 1:
            return members[0], False
        return (tuple(members) if members else None), False
    return None, False


def _fields_at(loc: Sequence[int | str]) -> list[str]:
    """The field names of the model at ``loc`` (following tags, list items and map keys), for "did you mean"."""
    current: Any = Manifest
    skip = False
    tagged = _tagged()
    for part in loc:
        if skip:
            skip = False
            continue
        if isinstance(current, tuple):
            current = tagged.get(part)
            if current is None:
                return []
            continue
        fields = getattr(current, "model_fields", None)
        if fields is None or part not in fields:
            return []
        current, skip = _unwrap(fields[part].annotation)
    fields = getattr(current, "model_fields", None)
    return sorted(fields) if fields else []


def _suggestion(word: str | int, choices: list[str]) -> str:
    import difflib

    if not isinstance(word, str) or not choices:
        return ""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if close:
        return f"; did you mean {close[0]!r}?"
    return f"; allowed: {', '.join(choices)}"
