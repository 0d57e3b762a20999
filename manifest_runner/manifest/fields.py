"""The building blocks of the manifest's models: typed text, durations, ports, names, KV keys and values (pure).

Each refuses what YAML would silently turn into something else (a number where text is expected, a duration without
a unit) with a message that says how to write it.
"""

from __future__ import annotations

import json
import math
from datetime import date
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
)

from manifest_runner.util.durations import parse_duration

_INTERPOLATED = {"type": "string", "pattern": r"^\$\{"}


def _yaml_kind(value: object) -> str | None:
    """Name the YAML type of a value that is not text, for messages that tell the user to quote it."""
    if isinstance(value, date):
        return "date"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if value is None:
        return "null"
    return None


def _text(value: object) -> object:
    """Refuse numbers and booleans where text is expected, instead of silently turning ``2.30`` into ``"2.3"``."""
    kind = _yaml_kind(value)
    if kind is not None and kind != "null":
        shown = value.isoformat() if isinstance(value, date) else value
        raise ValueError(f'{shown} is a YAML {kind}; quote it to make it text: "{shown}"')
    return value


Text = Annotated[str, BeforeValidator(_text)]


def _duration(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return value  # let the str validator report the type
    if isinstance(value, int | float):
        raise ValueError(f"duration {value!r} needs a unit, e.g. '{value}s' (units: ms, s, m, h)")
    seconds = parse_duration(value)
    if seconds <= 0:
        raise ValueError(f"duration {value!r} must be greater than zero")
    return value.strip()


Duration = Annotated[
    str,
    BeforeValidator(_duration),
    WithJsonSchema({"type": "string", "pattern": r"^(\d+(\.\d*)?(ns|us|µs|ms|s|m|h))+$", "examples": ["10s", "1m30s"]}),
]
"""A Go-style duration such as ``10s``, ``1m30s`` or ``500ms``."""

Port = Annotated[
    int,
    Field(ge=1, le=65535),
    WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 1, "maximum": 65535}, _INTERPOLATED]}),
]

_NAME = r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,126}[A-Za-z0-9])?$"
_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,255}$"
_OWNER = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
_META_KEY = r"^[A-Za-z0-9_-]{1,128}$"

#: Plain-language explanations of the patterns above, used in place of "String should match pattern '...'".
PATTERN_HELP = {
    _NAME: "a service name uses letters, digits, '.', '_' and '-', starts and ends with a letter or digit, "
    "and has at most 128 characters",
    _ID: "a service id uses letters, digits and '.', '_', ':', '@', '-', and starts with a letter or digit",
    _OWNER: "an owner uses letters, digits, '.', '_' and '-' (at most 63), and starts with a letter or digit",
    _ENV_NAME: "a dependency name is an environment variable name: letters, digits and '_', not starting with a digit",
    _META_KEY: "a meta key uses letters, digits, '_' and '-' (at most 128)",
}

ServiceName = Annotated[str, Field(pattern=_NAME, max_length=128)]
ServiceId = Annotated[str, Field(pattern=_ID)]
Owner = Annotated[str, Field(pattern=_OWNER)]
DependencyName = Annotated[str, Field(pattern=_ENV_NAME, max_length=128)]
MetaKey = Annotated[str, Field(pattern=_META_KEY)]
MetaValue = Annotated[Text, Field(max_length=512)]


KV_VALUE_LIMIT = 512 * 1024
"""Consul's largest KV value (``kv_max_value_size``), in bytes."""


def kv_path_problem(value: str, *, folder: bool) -> str | None:
    """Why ``value`` cannot be a KV key (``folder``: a prefix ending with ``/``), or None.

    Consul stores any bytes, but a key with an empty, ``.`` or ``..`` segment is one that ``consul kv get`` and
    HTTP paths normalise into another key (``a/../b`` is ``b``, and could reach the runner's own records), and a
    control character cannot be shown or typed."""
    what = "prefix" if folder else "KV key"
    if not value:
        return f"a {what} cannot be empty"
    if value.startswith("/"):
        return f"{what} {value!r} must not start with '/'"
    if folder != value.endswith("/"):
        if folder:
            return f"{what} {value!r} must be a folder, ending with '/'"
        return f"KV key {value!r} must not end with '/' (that is a folder, not a key)"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        return f"{what} {value!r} holds a control character"
    segments = value.removesuffix("/").split("/")
    for bad in ("", ".", ".."):
        if bad in segments:
            return f"{what} {value!r} has an {'empty' if not bad else repr(bad)} path segment; write the path it means"
    return None


def _kv_key(value: str) -> str:
    problem = kv_path_problem(value, folder=False)
    if problem:
        raise ValueError(problem)
    return value


KVKey = Annotated[Text, AfterValidator(_kv_key)]


def _kv_value(value: Any) -> Any:
    """A KV value: text, number, boolean, list or map, at most 512 KiB once stored. ``null`` is refused."""
    checked = _kv_json(value)
    size = len(checked.encode()) if isinstance(checked, str) else len(json.dumps(checked, separators=(",", ":")))
    if size > KV_VALUE_LIMIT:
        raise ValueError(f"the value is {size:,} bytes once stored; Consul keeps at most {KV_VALUE_LIMIT:,} (512 KiB)")
    return checked


def _kv_json(value: Any) -> Any:
    if value is None:
        raise ValueError('a KV value cannot be null; use "" for an empty value')
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value!r} cannot be stored as JSON; quote it to store it as text")
    if isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, list):
        return [_kv_json(item) if item is not None else None for item in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise ValueError("keys of a map value must be text")
        return {k: (_kv_json(v) if v is not None else None) for k, v in value.items()}
    raise ValueError(f"{type(value).__name__} values cannot be stored; quote the value to store it as text")


KVValue = Annotated[
    Any,
    AfterValidator(_kv_value),
    WithJsonSchema({"type": ["string", "number", "integer", "boolean", "array", "object"]}),
]


class Model(BaseModel):
    # Field docstrings become descriptions when the JSON Schema is exported (schema_export.py), not here:
    # pydantic's use_attribute_docstrings reads and parses this file at import, ~40 ms of every start.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True, defer_build=True)


def host_port(value: str, what: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{what} {value!r} must look like host:port with a port from 1 to 65535")
    return value


def http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{value!r} is not an http:// or https:// URL")
    return value
