"""Secrets this process knows (ACL tokens), so that none is ever printed, even by accident.

The token is sent only as a header and never formatted into a message on purpose; this registry is the second
line of defence: every message the command line prints and every log line passes through :func:`redact`, which
replaces any known secret by ``[redacted]``.
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_secrets: set[str] = set()
MIN_LENGTH = 6
"""Shorter strings are not registered: redacting them would garble ordinary words."""


def register(secret: str | None) -> None:
    if secret and len(secret) >= MIN_LENGTH:
        with _lock:
            _secrets.add(secret)


def redact(text: str) -> str:
    with _lock:
        known = sorted(_secrets, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, "[redacted]")
    return text
