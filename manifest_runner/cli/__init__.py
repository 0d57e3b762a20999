"""The ``consul-manifest`` command line: argument parsing and exit codes only, no business logic.

One module a family of commands: :mod:`.manifests` (validate, schema, agent), :mod:`.changes` (plan, apply,
destroy), :mod:`.delivery` (render, exec), :mod:`.run` (run); what they share is in :mod:`.common`.
"""

from __future__ import annotations

from manifest_runner.cli import changes, delivery, imports, manifests, run
from manifest_runner.cli.common import (
    EXIT_CHANGES,
    EXIT_CONSUL,
    EXIT_FAILED,
    EXIT_INVALID,
    EXIT_OK,
    cli,
    exit_code_for,
)

__all__ = [
    "EXIT_CHANGES",
    "EXIT_CONSUL",
    "EXIT_FAILED",
    "EXIT_INVALID",
    "EXIT_OK",
    "changes",
    "cli",
    "delivery",
    "exit_code_for",
    "imports",
    "main",
    "manifests",
    "run",
]


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="consul-manifest")
