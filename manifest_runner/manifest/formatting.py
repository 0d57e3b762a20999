"""A service dependency's ``format`` template: which fields it may use, its check at validation, and filling it (pure).

``{address}``, ``{host}`` (IPv6 in brackets), ``{port}``, ``{id}``, ``{node}``, ``{datacenter}``, ``{service}``,
``{tags}`` (comma-separated) and ``{meta[KEY]}`` (empty when absent); no format specs or conversions.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from typing import Any

FORMAT_FIELDS = frozenset({"address", "host", "port", "id", "node", "datacenter", "meta", "tags", "service"})


class _Fields(string.Formatter):
    def get_field(self, field_name: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Any:
        name, rest = field_name.split("[", 1) if "[" in field_name else (field_name, "")
        if name not in FORMAT_FIELDS:
            raise KeyError(name)
        if name == "meta" and rest:
            key = rest.rstrip("]")
            return kwargs["meta"].get(key, ""), field_name
        return kwargs[name], field_name


def fill(template: str, fields: Mapping[str, Any]) -> str:
    """Fill a template (already checked by :func:`format_problem`) with an instance's fields."""
    return _Fields().vformat(template, (), fields)


def format_problem(template: str) -> str | None:
    """Why a ``format`` template cannot work, or None. Checked when the manifest is validated."""
    try:
        for _, field_name, spec, conversion in string.Formatter().parse(template):
            if field_name is None:
                continue
            name = field_name.split("[", 1)[0]
            indexed = "[" in field_name and field_name.endswith("]")
            if name not in FORMAT_FIELDS or indexed != (name == "meta"):
                known = ", ".join("{" + f + ("[KEY]" if f == "meta" else "") + "}" for f in sorted(FORMAT_FIELDS))
                return f"unknown field {{{field_name}}}; use {known}"
            if spec or conversion:
                return f"{{{field_name}}}: format specs and conversions are not supported"
    except ValueError as err:
        return f"not a valid template: {err}"
    return None
