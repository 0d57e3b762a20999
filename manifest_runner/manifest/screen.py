"""A first look at a YAML document's events, before any parser builds a tree from it.

Refused here, each at its line and column:

- nesting deeper than :data:`MAX_DEPTH` (libyaml's tree builder recurses in C, and a 30 KB document nested 30,000
  levels deep would crash the process; the event parser does not recurse, and the scan stops at the first level
  too many);
- YAML tags (``!!python/...``, ``!!str``, ``!custom``): a manifest is plain YAML, and a tag would either be dropped
  or change what is stored;
- an alias to a node that contains it (``&r [1, *r]``), which no plain value can represent;
- a map key that is a list or a map (``? [a, b]``): keys are text.

The scan uses libyaml's event parser when it can read the document (fast: a few milliseconds for thousands of
lines). libyaml reads YAML 1.1 and refuses some YAML 1.2 forms (``[team:billing]``), which ruamel's own parser
accepts: such a document skips libyaml entirely and is parsed by the pure-Python parser, which recurses in Python
(a deep document raises RecursionError, caught and reported) and whose tree shows tags and odd keys; only a document
with anchors and aliases is scanned again here, in pure Python, for recursive aliases.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from manifest_runner.errors import Problem

MAX_DEPTH = 64
"""The deepest nesting of maps and lists a manifest may have (a real one nests about eight levels)."""


@dataclass
class Screened:
    problems: list[Problem] = field(default_factory=list)
    libyaml_reads_it: bool = False
    """Whether libyaml parsed the whole document: only then may its (recursive, C) tree builder be used."""


def screen(text: str, name: str) -> Screened:
    """Scan the document's events; the problems found, and whether libyaml can read it."""
    result = Screened()
    try:
        result.problems = _scan(YAML(typ="safe", pure=False).parse(text), name)
        result.libyaml_reads_it = True
    except YAMLError:
        if "&" in text and "*" in text:  # anchors and aliases: look for recursive ones in pure Python
            with contextlib.suppress(YAMLError, RecursionError):  # the precise parser reports it at its place
                result.problems = _scan(YAML(typ="safe", pure=True).parse(text), name)
    return result


@dataclass
class _Collection:
    mapping: bool
    anchor: str | None
    items: int = 0


def _scan(events: Iterable[Any], name: str) -> list[Problem]:
    problems: list[Problem] = []
    stack: list[_Collection] = []
    for event in events:
        kind = type(event).__name__
        mark = event.start_mark
        line, col = mark.line + 1, mark.column + 1
        if kind in ("ScalarEvent", "SequenceStartEvent", "MappingStartEvent", "AliasEvent"):
            in_key = bool(stack) and stack[-1].mapping and stack[-1].items % 2 == 0
            if stack:
                stack[-1].items += 1
            tag = getattr(event, "tag", None)
            if tag is not None and kind != "AliasEvent":
                problems.append(Problem(name, line, col, "", f"YAML tags are not supported ({_tag(tag)}); remove it"))
            if kind == "AliasEvent" and any(c.anchor == event.anchor for c in stack):
                problems.append(Problem(name, line, col, "", f"the alias *{event.anchor} refers to a node it is in"))
            if in_key and kind in ("SequenceStartEvent", "MappingStartEvent"):
                problems.append(Problem(name, line, col, "", "a map key must be text, not a list or a map"))
            if kind in ("SequenceStartEvent", "MappingStartEvent"):
                stack.append(_Collection(kind == "MappingStartEvent", event.anchor))
                if len(stack) > MAX_DEPTH:
                    problems.append(Problem(name, line, col, "", f"the document nests deeper than {MAX_DEPTH} levels"))
                    return problems  # stop here: reading on would only cost time
        elif kind in ("SequenceEndEvent", "MappingEndEvent") and stack:
            stack.pop()
        elif kind == "DocumentEndEvent":
            stack.clear()
    return problems


def _tag(tag: str) -> str:
    return "!!" + tag.removeprefix("tag:yaml.org,2002:") if tag.startswith("tag:yaml.org,2002:") else tag
