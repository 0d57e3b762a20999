"""Health checks of a service, and the heartbeat probes that keep TTL checks up to date (pure models)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from manifest_runner.manifest.fields import Duration, Model, Text, host_port, http_url
from manifest_runner.util.durations import parse_duration


class _CheckOptions(Model):
    name: Text | None = None
    """A display name for the check; default: derived from its kind and target."""
    id: Text | None = None
    """The check id; default: ``service:<service-id>:<name>`` when the check has a ``name`` (stable when checks are
    reordered), else Consul's own ``service:<service-id>`` (``service:<service-id>:<n>`` with several)."""
    notes: Text | None = None
    """Free-form notes shown with the check."""
    deregister_critical_after: Duration | None = None
    """Deregister the service when this check has been critical for this long (Consul's minimum is 1m)."""
    status: Literal["passing", "warning", "critical"] | None = None
    """The check's initial status when registered; Consul's default is critical."""

    @field_validator("deregister_critical_after")
    @classmethod
    def _at_least_a_minute(cls, value: str | None) -> str | None:
        if value is not None and parse_duration(value) < 60:
            raise ValueError(f"{value!r} is below Consul's 1m minimum; Consul would silently use 1m")
        return value


class _IntervalCheck(_CheckOptions):
    interval: Duration = "10s"
    """How often Consul runs the check."""
    timeout: Duration | None = None
    """How long one run may take; Consul's default is 10s (or the interval, if shorter)."""
    success_before_passing: Annotated[int, Field(ge=0)] = 0
    """Consecutive successes needed before the check turns passing."""
    failures_before_critical: Annotated[int, Field(ge=0)] = 0
    """Consecutive failures needed before the check turns critical."""
    output_max_size: Annotated[int, Field(ge=1)] | None = None
    """The most bytes of the check's output Consul keeps (Consul's default: 4 KB)."""


class HttpCheck(_IntervalCheck):
    """Consul requests the URL: 2xx is passing, 429 warning, anything else critical."""

    http: Annotated[str, AfterValidator(http_url)]
    """The URL Consul requests."""
    method: Literal["GET", "HEAD", "POST", "PUT", "OPTIONS"] | None = None
    """The HTTP method; default GET."""
    header: dict[str, list[Text]] = Field(default_factory=dict)
    """Request headers, each with a list of values."""
    body: Text | None = None
    """The request body (with ``method: POST`` or ``PUT``)."""
    tls_skip_verify: bool = False
    """Do not verify the certificate of an https:// URL."""
    tls_server_name: Text | None = None
    """The name to verify the certificate against (SNI), when it differs from the URL's host (Consul 1.10+)."""


class TcpCheck(_IntervalCheck):
    """Consul opens a TCP connection: connected is passing, anything else critical."""

    tcp: Annotated[str, AfterValidator(lambda v: host_port(v, "tcp"))]
    """The ``host:port`` Consul connects to."""


class GrpcCheck(_IntervalCheck):
    """Consul calls the standard gRPC health service."""

    grpc: Annotated[str, AfterValidator(lambda v: host_port(v.split("/", 1)[0], "grpc") and v)]
    """``host:port``, optionally followed by ``/service`` to check one gRPC service."""
    grpc_use_tls: bool = False
    """Use TLS for the gRPC call."""
    tls_skip_verify: bool = False
    """With ``grpc_use_tls``: do not verify the certificate."""
    tls_server_name: Text | None = None
    """With ``grpc_use_tls``: the name to verify the certificate against (Consul 1.10+)."""


class H2PingCheck(_IntervalCheck):
    """Consul sends an HTTP/2 PING frame (Consul 1.10+)."""

    h2ping: Annotated[str, AfterValidator(lambda v: host_port(v, "h2ping"))]
    """The ``host:port`` Consul pings."""
    h2ping_use_tls: bool = True
    """Use TLS (Consul's default)."""


class AliasCheck(_CheckOptions):
    """The health of another service (or node) is this check's health."""

    alias_service: Text
    """The id of the service whose health this check mirrors."""
    alias_node: Text | None = None
    """The node of that service; default: this agent's node."""


class ScriptCheck(_IntervalCheck):
    """Consul runs a command on the agent's host: refused unless the manifest says ``allow_script_checks: true``
    (a manifest could otherwise run commands where the agent runs), and the agent has ``enable_script_checks``."""

    args: list[Text] = Field(min_length=1)
    """The command and its arguments (no shell): exit 0 passing, 1 warning, else critical."""


class DockerCheck(_IntervalCheck):
    """Consul runs a command inside a container (a script check: the same opt-in applies)."""

    docker_container_id: Text
    """The container to run the command in."""
    args: list[Text] = Field(min_length=1)
    """The command and its arguments."""
    shell: Text | None = None
    """The shell inside the container; default ``/bin/sh``."""


class Heartbeat(Model):
    """A local probe whose result the runner reports to a TTL check: pass, warn or fail."""

    http: Annotated[str, AfterValidator(http_url)] | None = None
    """Probe this URL: 2xx passes, 429 warns, anything else (or no answer) fails, as Consul's own HTTP check does."""
    tcp: Annotated[str, AfterValidator(lambda v: host_port(v, "tcp"))] | None = None
    """Probe this ``host:port``: a connection passes, anything else fails."""
    command: list[Text] | None = Field(default=None, min_length=1)
    """Run this command (no shell): exit 0 passes, exit 1 warns, anything else fails."""
    every: Duration | None = None
    """How often to probe; default: a third of the TTL."""
    timeout: Duration = "5s"
    """How long one probe may take before it counts as failed."""

    @model_validator(mode="after")
    def _exactly_one_probe(self) -> Heartbeat:
        kinds = [k for k in ("http", "tcp", "command") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"a heartbeat needs exactly one of: http, tcp, command (found {kinds or 'none'})")
        return self


class TtlCheck(_CheckOptions):
    """Consul expects to hear from the service within the TTL; ``heartbeat`` lets the runner do it."""

    ttl: Duration
    """Consul marks the check critical when no update arrives within this time."""
    heartbeat: Heartbeat | None = None
    """A local probe that ``consul-manifest run`` uses to keep this check up to date."""

    @model_validator(mode="after")
    def _heartbeat_faster_than_ttl(self) -> TtlCheck:
        every = self.heartbeat.every if self.heartbeat is not None else None
        if every is not None and parse_duration(every) >= parse_duration(self.ttl):
            raise ValueError(f"heartbeat.every ({every}) must be shorter than the ttl ({self.ttl})")
        return self


CHECK_KINDS = ("http", "tcp", "grpc", "ttl", "h2ping", "alias_service", "docker_container_id", "args")
"""The key that tells a check's kind (a docker check also has ``args``: it is told by its container)."""


def _check_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        found = [k for k in CHECK_KINDS if k in value]
        if found == ["docker_container_id", "args"]:
            return "docker_container_id"
        return found[0] if len(found) == 1 else None
    if isinstance(value, BaseModel):
        if isinstance(value, DockerCheck):
            return "docker_container_id"
        return next((k for k in CHECK_KINDS if getattr(value, k, None) is not None), None)
    return None


Check = Annotated[
    Annotated[HttpCheck, Tag("http")]
    | Annotated[TcpCheck, Tag("tcp")]
    | Annotated[GrpcCheck, Tag("grpc")]
    | Annotated[TtlCheck, Tag("ttl")]
    | Annotated[H2PingCheck, Tag("h2ping")]
    | Annotated[AliasCheck, Tag("alias_service")]
    | Annotated[DockerCheck, Tag("docker_container_id")]
    | Annotated[ScriptCheck, Tag("args")],
    Discriminator(
        _check_kind,
        custom_error_type="check_kind",
        custom_error_message=(
            "a check is a map with exactly one of: http, tcp, grpc, ttl, h2ping, alias_service, args "
            "(a script), docker_container_id (with args)"
        ),
    ),
]

SCRIPT_CHECKS = (ScriptCheck, DockerCheck)
