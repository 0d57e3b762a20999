"""KV values with their type: what a manifest sets is exactly what a read returns (pure).

Text is stored as its UTF-8 bytes; numbers, booleans, lists and maps as compact JSON. Which of the two is recorded
in the key's ``Flags`` (a free 64-bit integer Consul keeps for clients), under a marker so that flags set by other
tools are not mistaken for ours: ``0xC0DE0000 | kind``. A value read without our marker is returned as text, the way
every other Consul client would show it, so ``"5432"`` stays ``"5432"`` and ``5432`` stays ``5432``.
"""

from __future__ import annotations

import json
from typing import Any

FLAG_MARK = 0xC0DE0000
FLAG_MASK = 0xFFFF0000
KIND_TEXT = 1
KIND_JSON = 2
FLAGS_TEXT = FLAG_MARK | KIND_TEXT
FLAGS_JSON = FLAG_MARK | KIND_JSON


def encode(value: Any) -> tuple[bytes, int]:
    """A value -> (bytes to store, flags recording how to read them back)."""
    if isinstance(value, str):
        return value.encode("utf-8"), FLAGS_TEXT
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8"), FLAGS_JSON


def decode(data: bytes | None, flags: int) -> Any:
    """Stored bytes and flags -> the value that was set. Unknown flags: the bytes as text (or ``None`` if binary)."""
    raw = data or b""
    if flags & FLAG_MASK == FLAG_MARK and flags & ~FLAG_MASK == KIND_JSON:
        return json.loads(raw.decode("utf-8"))
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
