"""Consul's answers -> the project's exception tree: which statuses are errors, and of which kind.

Unreachable or "no leader" -> :class:`~manifest_runner.errors.ConsulUnavailable`; 401/403 ->
:class:`~manifest_runner.errors.ConsulRefused`; anything else -> :class:`~manifest_runner.errors.ConsulRequestError`.
404 and a transaction's 409 are answers, not errors: the caller reads them.
"""

from __future__ import annotations

import re

from manifest_runner.consul.transport import Answer
from manifest_runner.errors import (
    ConsulError,
    ConsulProtocolError,
    ConsulRefused,
    ConsulRequestError,
    ConsulUnavailable,
)
from manifest_runner.util.text import printable


class TxnFailed(ConsulError):
    """A transaction was rolled back (HTTP 409): nothing in it was applied. ``errors`` are ``(op_index, what)``."""

    def __init__(self, errors: list[tuple[int, str]]) -> None:
        self.errors = errors
        detail = "; ".join(f"op {index}: {what}" for index, what in errors) or "rolled back"
        super().__init__(f"transaction rolled back: {detail}", operation="PUT /v1/txn", status=409)


class TxnTooLarge(ConsulRequestError):
    """The server refused a transaction for its number of operations; ``limit`` is the server's limit."""

    def __init__(self, message: str, limit: int) -> None:
        self.limit = limit
        super().__init__(message, operation="PUT /v1/txn", status=413)


class CheckNotFound(ConsulRequestError):
    """The agent does not know this check (it restarted empty, or the service was deregistered)."""


def raise_for_status(answer: Answer, operation: str, path: str) -> None:
    status = answer.status
    if 300 <= status < 400:
        where = answer.headers.get("Location") or "elsewhere"
        raise ConsulProtocolError(
            f"the server redirects to {printable(where, 100)}; Consul does not redirect its API (a key with '..' or "
            "'//', or something else answering in its place)",
            operation=operation,
            status=status,
        )
    if status < 400 or status == 404 or (status == 409 and path == "/v1/txn"):
        return
    body = answer.body.decode("utf-8", "replace").strip()[:300]
    if status in (401, 403):
        raise ConsulRefused(
            f"permission denied ({body or 'no reason given'}); check the ACL token's policy",
            operation=operation,
            status=status,
        )
    if status == 500 and "leader" in body.lower():
        raise ConsulUnavailable(f"Consul has no cluster leader ({body})", operation=operation, status=status)
    if status == 413 and path == "/v1/txn":
        match = re.search(r"\((\d+) > (\d+)\)", body)
        if match:
            raise TxnTooLarge(body, int(match.group(2)))
    if status == 429:
        raise ConsulUnavailable(f"Consul is rate-limiting this client ({body})", operation=operation, status=status)
    raise ConsulRequestError(body or answer.reason or "error", operation=operation, status=status)
