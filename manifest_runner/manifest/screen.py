"""A first look at a YAML document's events, before any parser builds a tree from it.

Refused here, each at its line and column:

- nesting deeper than :data:`MAX_DEPTH` (libyaml's tree builder recurses in C, and a 30 KB document nested 30,000
  levels deep would crash the process; the event parser does not recurse, and the scan stops at the first level
  too many);
- YAML tags (``!!python/...``, ``!!str``, ``!custom``): a manifest is plain YAML, and a tag would either be dropped
  or change what is stored;
- an alias to a node that contains it (``&r [1, *r]``), which no plain value can represent;
- a map key that is a list or a map (``? [a, b]``): keys are text.

The scan uses libyaml's event parser when it can read the document (fast: a few milliseconds for thousands of lines),
and builds the document's plain values in the same pass (:mod:`.fastbuild`). libyaml reads YAML 1.1 and refuses some
YAML 1.2 forms (``[team:billing]``), which ruamel's own parser accepts: such a document skips libyaml entirely and is
parsed by the pure-Python parser, which recurses in Python (a deep document raises RecursionError, caught and reported)
and whose tree shows tags and odd keys; only a document with anchors and aliases is scanned again here, in pure Python,
for recursive aliases.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from manifest_runner.errors import Problem
from manifest_runner.manifest.fastbuild import Builder, GiveUp

MAX_DEPTH = 64
"""The deepest nesting of maps and lists a manifest may have (a real one nests about eight levels)."""
MAX_PROBLEMS = 20
"""The scan stops after this many problems: a pathological document does not print pages."""


@dataclass
class Screened:
    problems: list[Problem] = field(default_factory=list)
    libyaml_reads_it: bool = False
    """Whether libyaml parsed the whole document."""
    document: Any = None
    """The document's plain values, built in the same pass (:mod:`.fastbuild`), or None when it has a form the
    fast path leaves to the precise one."""
    built: bool = False


def screen(text: str, name: str) -> Screened:
    """Scan the document's events; the problems found, and whether libyaml can read it."""
    result = Screened()
    builder: Builder | None = Builder()
    try:
        problems: list[Problem] = []
        _scan_into(problems, YAML(typ="safe", pure=False).parse(text), name, builder)
        result.problems = problems
        result.libyaml_reads_it = True
    except GiveUp:
        builder = None  # the scan goes on without building
        problems = []
        try:
            _scan_into(problems, YAML(typ="safe", pure=False).parse(text), name)
            result.problems, result.libyaml_reads_it = problems, True
        except YAMLError:
            return result
    except YAMLError:
        if _worth_a_closer_look(text):
            result.problems = _scan(YAML(typ="safe", pure=True).parse(text), name)
        return result
    if builder is not None and not result.problems:
        result.document, result.built = builder.result, True
    return result


def _worth_a_closer_look(text: str) -> bool:
    """Whether a document libyaml could not read has a feature that can hurt the pure parser's tree builder:
    anchors (a recursive alias), ``?`` or a collection as a key (ruamel builds nested mapping keys in exponential
    time), or deep brackets. A cheap over-estimate: a false alarm only costs the scan."""
    if ("&" in text and "*" in text) or "?" in text or "{{" in text or "{[" in text or "[{" in text:
        return True
    depth = deepest = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}" and depth:
            depth -= 1
    return deepest > MAX_DEPTH // 4


@dataclass
class _Collection:
    mapping: bool
    anchor: str | None
    items: int = 0


def _scan(events: Iterable[Any], name: str) -> list[Problem]:
    """The problems found in ``events``; those found before a syntax error are kept (the precise parser reports
    the syntax error itself at its place)."""
    problems: list[Problem] = []
    with contextlib.suppress(YAMLError, RecursionError):
        _scan_into(problems, events, name)
    return problems


def _scan_into(problems: list[Problem], events: Iterable[Any], name: str, builder: Builder | None = None) -> None:
    stack: list[_Collection] = []
    for event in events:
        if len(problems) >= MAX_PROBLEMS:
            return
        if builder is not None and not problems:
            builder.feed(event)
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
                    return  # stop here: reading on would only cost time
        elif kind in ("SequenceEndEvent", "MappingEndEvent") and stack:
            stack.pop()
        elif kind == "DocumentEndEvent":
            stack.clear()


def _tag(tag: str) -> str:
    return "!!" + tag.removeprefix("tag:yaml.org,2002:") if tag.startswith("tag:yaml.org,2002:") else tag
