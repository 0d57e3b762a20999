"""Untrusted text made safe to show: the one rule for anything from Consul, the environment or a file that is
written into a line a person or a shell reads (a comment in an env file, a plan line, a log line, an error).

Control characters (newlines and carriage returns included), DEL, C1 controls and Unicode's invisible formatting and
direction characters (which can make a line read differently than it is) are written as escapes (``\\n``,
``\\x1b``, ``\\u202e``), so one value can never become two lines, a terminal command or a reordered line.
Long texts are cut, saying so. Formats with their own quoting (JSON, YAML, shell values) use their own escaping.
"""

from __future__ import annotations

import unicodedata

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _unsafe(ch: str) -> bool:
    code = ord(ch)
    if code < 0x20 or 0x7F <= code <= 0x9F:
        return True
    return code > 0x7F and unicodedata.category(ch) in ("Cf", "Zl", "Zp", "Cs", "Co", "Cn")


def printable(text: str, limit: int = 2000) -> str:
    """``text`` on one line, every unsafe character escaped; at most ``limit`` characters (cut with a note)."""
    if text.isascii() and text.isprintable():
        out = text
    else:
        out = "".join(
            (_NAMED.get(ch) or (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")) if _unsafe(ch) else ch
            for ch in text
        )
    if len(out) > limit:
        return out[:limit] + f"... ({len(out) - limit} more characters)"
    return out
