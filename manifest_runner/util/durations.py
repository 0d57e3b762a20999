"""Go-style durations (``10s``, ``1m30s``, ``250ms``), the form Consul itself accepts and returns.

Pure: parsing and formatting only.
"""

from __future__ import annotations

import re

_UNITS: dict[str, float] = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_WHOLE = re.compile(r"(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|ms|s|m|h))+")


def parse_duration(text: str) -> float:
    """Return the duration in seconds; raise ``ValueError`` with a helpful message when it is not one.

    >>> parse_duration("1m30s")
    90.0
    """
    stripped = text.strip()
    if re.fullmatch(r"\d+(?:\.\d+)?", stripped):
        raise ValueError(f"duration {text!r} needs a unit, e.g. '{stripped}s' (units: ms, s, m, h)")
    if not _WHOLE.fullmatch(stripped):
        raise ValueError(f"{text!r} is not a duration like '10s', '1m30s' or '500ms' (units: ms, s, m, h)")
    return sum(float(number) * _UNITS[unit] for number, unit in _PART.findall(stripped))


def format_duration(seconds: float) -> str:
    """Format seconds the way Go prints a duration, to the millisecond (``90`` -> ``1m30s``)."""
    millis = round(seconds * 1000)
    if millis == 0:
        return "0s"
    if millis < 1000:
        return f"{millis}ms"
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = rest / 1000
    out = ""
    if hours:
        out += f"{hours}h"
    if hours or minutes:
        out += f"{minutes}m"
    out += f"{secs:g}s"
    return out
