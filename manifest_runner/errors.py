"""One exception tree for everything consul-manifest raises.

::

    ManifestRunnerError                 base class; catch this to catch everything of ours
    ├── ManifestError                   invalid manifest: every Problem found, located (exit 3)
    ├── SettingsError                   invalid connection settings or flags (exit 3)
    ├── ConsulError                     Consul did not do what was asked; names method, path, status
    │   ├── ConsulUnavailable           cannot connect, timed out, TLS handshake failed (exit 4)
    │   ├── ConsulRefused               ACL denied (401/403) or TLS verification refused (exit 4)
    │   ├── ConsulProtocolError         the answer is not what Consul sends: not JSON, wrong shape (exit 4)
    │   └── ConsulRequestError          any other answer that is not a success (400, 413, 5xx...) (exit 1)
    ├── LockTimeout                     another applier of the same owner held the lock too long (exit 1)
    ├── ApplyFailed                     an action failed; carries the report of what was done (exit 1)
    ├── ResolveError                    a dependency resolved from no source and is not optional (exit 1)
    ├── OutputError                     an output file could not be written; the old one is intact (exit 1)
    └── ListenError                     the status endpoint's address cannot be bound (exit 1)

Messages never contain a token: the adapter sends the token only as a header and never formats it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class Problem:
    """One located problem in a manifest, printed like a compiler diagnostic."""

    file: str
    line: int
    col: int
    path: str
    message: str

    def __str__(self) -> str:
        # line 0 marks a problem of the whole file or path (missing, unreadable), which has no position
        where = f"{self.file}:{self.line}:{self.col}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ManifestRunnerError(Exception):
    """Base class of every error consul-manifest raises on purpose."""


class ManifestError(ManifestRunnerError):
    """The manifest set is invalid. ``problems`` lists every problem found, sorted by file and position."""

    def __init__(self, problems: list[Problem] | tuple[Problem, ...]) -> None:
        self.problems: tuple[Problem, ...] = tuple(sorted(problems))
        count = len(self.problems)
        head = f"{count} problem{'s' if count != 1 else ''} in the manifest"
        super().__init__(head + "".join(f"\n{p}" for p in self.problems))


class SettingsError(ManifestRunnerError):
    """Connection settings or flags are invalid (a bad CONSUL_HTTP_ADDR, an unreadable token file...)."""


class ConsulError(ManifestRunnerError):
    """Consul did not do what was asked. ``operation`` is e.g. ``PUT /v1/agent/service/register``."""

    def __init__(self, message: str, *, operation: str = "", status: int | None = None) -> None:
        self.operation = operation
        self.status = status
        self.detail = message
        parts = [p for p in (operation, f"HTTP {status}" if status is not None else "") if p]
        super().__init__(f"{' -> '.join(parts)}: {message}" if parts else message)


class ConsulUnavailable(ConsulError):
    """Consul could not be reached in time: connection refused, timed out, or the TLS handshake failed."""


class AgentUnreachable(ConsulUnavailable):
    """The agent itself cannot be reached: connection refused or reset, no route, an unknown host."""


class ConsulRefused(ConsulError):
    """Consul refused the request: ACL permission denied or missing token (401/403)."""


class ConsulProtocolError(ConsulError):
    """The answer is not what Consul sends (not JSON, a wrong shape, a missing ``X-Consul-Index``): the server is
    not Consul, or something between us rewrote the answer."""


class ConsulUnsupportedFeature(ConsulError):
    """What was asked needs a Consul this one is not (a newer version, Enterprise): nothing was sent."""


class ConsulRequestError(ConsulError):
    """Consul answered with an error that is neither 'unreachable' nor 'refused' (400, 413, 5xx...)."""


class LockTimeout(ManifestRunnerError):
    """The per-owner apply lock could not be acquired within the lock timeout."""


class ApplyFailed(ManifestRunnerError):
    """An apply action failed. ``report`` says what was done, what failed and what was skipped."""

    def __init__(self, message: str, report: object) -> None:
        self.report = report
        super().__init__(message)


class ResolveError(ManifestRunnerError):
    """A dependency could not be resolved from Consul, the cache or a fallback, and is not optional."""


class OutputError(ManifestRunnerError):
    """An output file could not be written; the previous file, if any, is left intact."""


class ListenError(ManifestRunnerError):
    """``--listen``'s address cannot be bound: in use, or not an address of this host."""
