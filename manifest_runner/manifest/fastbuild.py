"""Plain values built from libyaml's events, in the pass that screens them: the fast path of a valid manifest.

ruamel's libyaml loader still builds values with Python code that resolves every scalar through its versioned
resolver (100 ms for a 2,200-line manifest); building them from the events the screen walks anyway costs a tenth
of that. Only the common forms are built here: plain scalars that are unmistakably null, a boolean, a decimal
integer, a simple decimal or text, quoted and block scalars, maps, lists, anchors, aliases and ``<<`` merges. Anything
else (a timestamp, an octal or hexadecimal number, an exponent, a duplicate key, several documents) gives up, and
the precise path parses the document with ruamel as before: both paths agree on every document this one builds (a
property test checks it).

Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

_INT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")
_FLOAT = re.compile(r"[-+]?(?:0|[1-9][0-9]*)\.[0-9]+")
_NULL = frozenset({"", "~", "null", "Null", "NULL"})
_TRUE = frozenset({"true", "True", "TRUE"})
_FALSE = frozenset({"false", "False", "FALSE"})


class GiveUp(Exception):
    """This document has a form the fast path does not build: the precise path will."""


@dataclass
class _Open:
    value: dict[Any, Any] | list[Any]
    anchor: str | None
    key: Any = None
    has_key: bool = False
    merges: list[dict[Any, Any]] = field(default_factory=list)


class Builder:
    """Fed every event of one document in order; ``result`` is the document's plain value."""

    def __init__(self) -> None:
        self.stack: list[_Open] = []
        self.anchors: dict[str, Any] = {}
        self.documents = 0
        self.result: Any = None

    def feed(self, event: Any) -> None:
        kind = type(event).__name__
        if kind == "ScalarEvent":
            self._value(_scalar(event), event.anchor)
        elif kind in ("SequenceStartEvent", "MappingStartEvent"):
            self.stack.append(_Open({} if kind == "MappingStartEvent" else [], event.anchor))
            if event.anchor:
                self.anchors[event.anchor] = self.stack[-1].value
        elif kind in ("SequenceEndEvent", "MappingEndEvent"):
            closed = self.stack.pop()
            if isinstance(closed.value, dict):
                for merged in closed.merges:
                    for key, value in merged.items():
                        closed.value.setdefault(key, value)
            self._value(closed.value, None, anchored=True)
        elif kind == "AliasEvent":
            if event.anchor not in self.anchors:
                raise GiveUp("an undefined alias")
            self._value(self.anchors[event.anchor], None, anchored=True, alias=True)
        elif kind == "DocumentStartEvent":
            self.documents += 1
            if self.documents > 1:
                raise GiveUp("several documents")

    def _value(self, value: Any, anchor: str | None, *, anchored: bool = False, alias: bool = False) -> None:
        if anchor and not anchored:
            self.anchors[anchor] = value
        if not self.stack:
            self.result = value
            return
        top = self.stack[-1]
        if isinstance(top.value, list):
            top.value.append(value)
            return
        if not top.has_key:
            if isinstance(value, dict | list):
                raise GiveUp("a key that is a map or a list")
            top.key, top.has_key = value, True
            return
        top.has_key = False
        if top.key == "<<" and top.key is not None:
            merged = value if isinstance(value, list) else [value]
            if not all(isinstance(item, dict) for item in merged):
                raise GiveUp("a merge of something else than maps")
            top.merges.extend(merged)
            return
        if top.key in top.value:
            raise GiveUp("a duplicate key")
        top.value[top.key] = value


def _scalar(event: Any) -> Any:
    text: str = event.value
    if event.style not in (None, "") or not event.implicit[0]:
        return text  # quoted or block: text as written
    return resolve_plain(text)


def resolve_plain(text: str) -> Any:
    """A plain scalar's value under YAML 1.2's core schema, as ruamel reads it; GiveUp for forms not built here."""
    if text in _NULL:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    if text in ("<<", "="):
        if text == "=":
            raise GiveUp("a value key")
        return text
    if _RUAMEL_INT.fullmatch(text) or _RUAMEL_FLOAT.fullmatch(text) or _TIMESTAMP.match(text):
        raise GiveUp(f"a number or a date in another form: {text[:20]!r}")
    return text


# ruamel's YAML 1.2 resolver patterns for the forms handed to the precise path
_RUAMEL_INT = re.compile(r"[-+]?0b[0-1_]+|[-+]?0o?[0-7_]+|[-+]?[0-9_]+|[-+]?0x[0-9a-fA-F_]+")
_RUAMEL_FLOAT = re.compile(
    r"[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)"
    r"|[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|[-+]?\.(?:nan|NaN|NAN)"
)
_TIMESTAMP = re.compile(r"[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?")
