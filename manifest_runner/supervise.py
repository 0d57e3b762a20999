"""exec --watch: run a command as a child, with its dependencies in its environment, and keep them current."""

from __future__ import annotations

from typing import Any


def supervise_command(paths: tuple[str, ...], command: list[str], **options: Any) -> int:
    raise NotImplementedError("exec --watch arrives with the watch module")
