"""``${VAR}`` and ``${VAR:-default}`` in manifest values, from an environment passed in (pure).

- ``${VAR}``: the variable's value; an unset variable is an error (a typo must not become an empty address).
- ``${VAR:-default}``: the default when the variable is unset or empty.
- ``$${``: a literal ``${``. A ``$`` not followed by ``{`` is left as it is.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

_EXPR = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class InterpolationError(ValueError):
    """A ``${...}`` expression that cannot be expanded; the message says which and why."""


def interpolate(text: str, environ: Mapping[str, str]) -> str:
    """Expand every ``${...}`` in ``text``; raise :class:`InterpolationError` naming the first bad expression."""
    if "$" not in text:
        return text

    def expand(match: re.Match[str]) -> str:
        whole = match.group(0)
        if whole == "$${":
            return "${"
        body = match.group(1)
        if body is None:
            raise InterpolationError(f"unterminated '${{' in {text!r}")
        name, sep, default = body.partition(":-")
        if not _NAME.fullmatch(name):
            raise InterpolationError(f"'${{{body}}}' is not ${{VAR}} or ${{VAR:-default}}")
        value = environ.get(name)
        if sep:
            return value if value else default
        if value is None:
            raise InterpolationError(f"environment variable {name} is not set (use ${{{name}:-default}} for a default)")
        return value

    return _EXPR.sub(expand, text)
