"""``${VAR}`` and ``${VAR:-default}`` in manifest values and keys, from an environment passed in (pure).

- ``${VAR}``: the variable's value; an unset variable is an error (a typo must not become an empty address).
- ``${VAR:-default}``: the default when the variable is unset or empty. The default may itself hold expressions:
  ``${A:-${B:-z}}`` is A, else B, else ``z``.
- ``$${``: a literal ``${``. A ``$`` not followed by ``{`` is left as it is.

Anything else inside ``${...}`` (``${A-b}``, ``${1A}``, an unterminated ``${``) is an error that names it: nothing is
stored that the manifest did not clearly say.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
MAX_NESTING = 8


class InterpolationError(ValueError):
    """A ``${...}`` expression that cannot be expanded; the message says which and why."""


def interpolate(text: str, environ: Mapping[str, str]) -> str:
    """Expand every ``${...}`` in ``text``; raise :class:`InterpolationError` naming the first bad expression."""
    if "$" not in text:
        return text
    value, _ = _expand(text, 0, environ, depth=0, closing=False)
    return value


def _expand(text: str, start: int, environ: Mapping[str, str], *, depth: int, closing: bool) -> tuple[str, int]:
    """Expand from ``start`` to the end (or, with ``closing``, to the ``}`` that closes a default). Returns the text
    and the position after what was read."""
    out: list[str] = []
    i = start
    while i < len(text):
        if text.startswith("$${", i):
            out.append("${")
            i += 3
        elif text.startswith("${", i):
            value, i = _expression(text, i, environ, depth=depth)
            out.append(value)
        elif closing and text[i] == "}":
            return "".join(out), i + 1
        else:
            out.append(text[i])
            i += 1
    if closing:
        raise InterpolationError(f"unterminated '${{' in {text!r}")
    return "".join(out), i


def _expression(text: str, start: int, environ: Mapping[str, str], *, depth: int) -> tuple[str, int]:
    """``${NAME}`` or ``${NAME:-default}`` at ``start``; returns its value and the position after it."""
    if depth >= MAX_NESTING:
        raise InterpolationError(f"'${{' nested more than {MAX_NESTING} deep in {text!r}")
    match = _NAME.match(text, start + 2)
    end = match.end() if match else start + 2
    following = text[end : end + 2]
    if match is None or not (following.startswith("}") or following == ":-"):
        close = text.find("}", start)
        if close < 0:
            raise InterpolationError(f"unterminated '${{' in {text!r}")
        raise InterpolationError(f"'{text[start : close + 1]}' is not ${{VAR}} or ${{VAR:-default}}")
    name = match.group(0)
    value = environ.get(name)
    if following.startswith("}"):
        if value is None:
            raise InterpolationError(f"environment variable {name} is not set (use ${{{name}:-default}} for a default)")
        return value, end + 1
    default, after = _expand(text, end + 2, environ, depth=depth + 1, closing=True)
    return (value if value else default), after
