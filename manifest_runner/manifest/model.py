"""The manifest, version 1, as pydantic models: the contract users and their GitOps repositories rely on.

Every model is frozen and rejects unknown fields; each field's docstring becomes its description in the JSON Schema
(``schemas/manifest.schema.json``, see :mod:`manifest_runner.manifest.jsonschema`), which editors use to complete and
check manifests. Pure: no I/O.

Validation that needs more than one field at a time and must point at a precise place (duplicate service ids, a key
in both ``seed`` and ``enforce``, clashes across files) lives in :mod:`.crosscheck`, so that every
problem is reported at its own ``file:line:col``.
"""

from __future__ import annotations

import math
import re
from datetime import date
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from manifest_runner.manifest.formatting import format_problem
from manifest_runner.marks import RESERVED_META_KEYS, RESERVED_META_PREFIX
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


def _kv_key(value: str) -> str:
    if not value:
        raise ValueError("a KV key cannot be empty")
    if value.startswith("/"):
        raise ValueError(f"KV key {value!r} must not start with '/'")
    if value.endswith("/"):
        raise ValueError(f"KV key {value!r} must not end with '/' (that is a folder, not a key)")
    if "//" in value or any(ord(ch) < 32 for ch in value):
        raise ValueError(f"KV key {value!r} has an empty path segment or a control character")
    return value


KVKey = Annotated[Text, AfterValidator(_kv_key)]


def _kv_value(value: Any) -> Any:
    """A KV value: text, number, boolean, list or map. ``null`` and non-JSON values are refused."""
    if value is None:
        raise ValueError('a KV value cannot be null; use "" for an empty value')
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value!r} cannot be stored as JSON; quote it to store it as text")
    if isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, list):
        return [_kv_value(item) if item is not None else None for item in value]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise ValueError("keys of a map value must be text")
        return {k: (_kv_value(v) if v is not None else None) for k, v in value.items()}
    raise ValueError(f"{type(value).__name__} values cannot be stored; quote the value to store it as text")


KVValue = Annotated[
    Any,
    AfterValidator(_kv_value),
    WithJsonSchema({"type": ["string", "number", "integer", "boolean", "array", "object"]}),
]


class _Model(BaseModel):
    # Field docstrings become descriptions when the JSON Schema is exported (schema_export.py), not here:
    # pydantic's use_attribute_docstrings reads and parses this file at import, ~40 ms of every start.
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)


def _host_port(value: str, what: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{what} {value!r} must look like host:port with a port from 1 to 65535")
    return value


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{value!r} is not an http:// or https:// URL")
    return value


class _CheckOptions(_Model):
    name: Text | None = None
    """A display name for the check; default: derived from its kind and target."""
    id: Text | None = None
    """The check id; default: Consul's own, ``service:<service-id>`` (or ``service:<service-id>:<n>`` with several)."""
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


class HttpCheck(_IntervalCheck):
    """Consul requests the URL: 2xx is passing, 429 warning, anything else critical."""

    http: Annotated[str, AfterValidator(_http_url)]
    """The URL Consul requests."""
    method: Literal["GET", "HEAD", "POST", "PUT", "OPTIONS"] | None = None
    """The HTTP method; default GET."""
    header: dict[str, list[Text]] = Field(default_factory=dict)
    """Request headers, each with a list of values."""
    tls_skip_verify: bool = False
    """Do not verify the certificate of an https:// URL."""


class TcpCheck(_IntervalCheck):
    """Consul opens a TCP connection: connected is passing, anything else critical."""

    tcp: Annotated[str, AfterValidator(lambda v: _host_port(v, "tcp"))]
    """The ``host:port`` Consul connects to."""


class GrpcCheck(_IntervalCheck):
    """Consul calls the standard gRPC health service."""

    grpc: Annotated[str, AfterValidator(lambda v: _host_port(v.split("/", 1)[0], "grpc") and v)]
    """``host:port``, optionally followed by ``/service`` to check one gRPC service."""
    grpc_use_tls: bool = False
    """Use TLS for the gRPC call."""


class Heartbeat(_Model):
    """A local probe whose result the runner reports to a TTL check: pass, warn or fail."""

    http: Annotated[str, AfterValidator(_http_url)] | None = None
    """Probe this URL: 2xx passes, 429 warns, anything else (or no answer) fails, as Consul's own HTTP check does."""
    tcp: Annotated[str, AfterValidator(lambda v: _host_port(v, "tcp"))] | None = None
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


CHECK_KINDS = ("http", "tcp", "grpc", "ttl")


def _check_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        found = [k for k in CHECK_KINDS if k in value]
        return found[0] if len(found) == 1 else None
    if isinstance(value, BaseModel):
        return next((k for k in CHECK_KINDS if getattr(value, k, None) is not None), None)
    return None


Check = Annotated[
    Annotated[HttpCheck, Tag("http")]
    | Annotated[TcpCheck, Tag("tcp")]
    | Annotated[GrpcCheck, Tag("grpc")]
    | Annotated[TtlCheck, Tag("ttl")],
    Discriminator(
        _check_kind,
        custom_error_type="check_kind",
        custom_error_message="a check is a map with exactly one of: http, tcp, grpc, ttl",
    ),
]


class Weights(_Model):
    """How much traffic an instance should get relative to others, by health (Consul's service weights)."""

    passing: Annotated[int, Field(ge=1, le=65535)] = 1
    """Weight while every check passes."""
    warning: Annotated[int, Field(ge=0, le=65535)] = 1
    """Weight while a check warns."""


def _meta(value: dict[str, str]) -> dict[str, str]:
    reserved = sorted(k for k in value if k in RESERVED_META_KEYS or k.startswith(RESERVED_META_PREFIX))
    if reserved:
        raise ValueError(f"meta keys {reserved} are reserved (consul-manifest or Consul itself writes them)")
    if len(value) > 64 - len(RESERVED_META_KEYS):
        raise ValueError(f"at most {64 - len(RESERVED_META_KEYS)} meta keys (Consul allows 64; the runner uses 3)")
    return value


Meta = Annotated[dict[MetaKey, MetaValue], AfterValidator(_meta)]


class Defaults(_Model):
    """Merged into every service: service values win, tags are added, meta is merged."""

    address: Text | None = None
    """The address services register with; default: the agent's address."""
    tags: list[Text] = Field(default_factory=list)
    """Tags added to every service."""
    meta: Meta = Field(default_factory=dict)
    """Meta merged into every service's meta (the service's own keys win)."""
    weights: Weights | None = None
    """Weights for services that declare none."""
    on_exit: Literal["deregister", "keep"] = "deregister"
    """What ``consul-manifest run`` does with services on SIGTERM, unless a service says otherwise."""


class Service(_Model):
    """One service instance registered with the local Consul agent."""

    name: ServiceName
    """The service name others discover it by."""
    id: ServiceId | None = None
    """The instance id, unique on its agent; default: ``<name>-<address>-<port>``."""
    address: Text | None = None
    """The address to register; default: ``defaults.address``, else the agent's address."""
    port: Port | None = None
    """The port the service listens on."""
    tags: list[Text] = Field(default_factory=list)
    """Tags for filtering (``defaults.tags`` are added)."""
    meta: Meta = Field(default_factory=dict)
    """Free-form metadata (merged over ``defaults.meta``)."""
    weights: Weights | None = None
    """Consul service weights, honoured by ``health_weighted`` resolution."""
    checks: list[Check] = Field(default_factory=list)
    """Health checks: http, tcp, grpc or ttl."""
    on_exit: Literal["deregister", "keep"] | None = None
    """What ``consul-manifest run`` does with this service on SIGTERM; default: ``defaults.on_exit``."""
    enable_tag_override: bool = False
    """Let other tools change this service's tags in the catalog without the agent reverting them."""


class KV(_Model):
    """Keys this manifest writes to Consul's KV store, under one prefix."""

    prefix: Text = ""
    """Prepended to every key below; ends with ``/`` (e.g. ``billing/``)."""
    seed: dict[KVKey, KVValue] = Field(default_factory=dict)
    """Written only when absent: an operator's later change is kept."""
    enforce: dict[KVKey, KVValue] = Field(default_factory=dict)
    """Kept equal to the manifest: drift is reverted."""

    @field_validator("prefix")
    @classmethod
    def _prefix_is_a_folder(cls, value: str) -> str:
        if value and (value.startswith("/") or not value.endswith("/") or "//" in value):
            raise ValueError(f"prefix {value!r} must be a folder like 'billing/': no leading '/', ending with '/'")
        return value


class _DependencyOptions(_Model):
    fallback: Text | None = None
    """The static value used when neither Consul nor the last-known-good cache has one."""
    optional: bool = False
    """When nothing resolves and there is no fallback, leave the variable out instead of failing."""
    max_age: Duration | None = None
    """The oldest last-known-good value to use when Consul cannot answer; default: no limit."""


def _format_template(value: str) -> str:
    problem = format_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


class ServiceDependency(_DependencyOptions):
    """A service this one needs: resolved to one healthy instance, formatted into a value."""

    service: ServiceName
    """The service name to resolve."""
    tag: Text | list[Text] | None = None
    """Only instances with this tag (or all of these tags)."""
    filter: Text | None = None
    """A Consul filter expression on the health results, e.g. ``Service.Meta.version == "2"``."""
    near: Text | None = None
    """Sort by round-trip time from this node (``_agent`` for the local agent)."""
    datacenters: list[Text] | None = Field(default=None, min_length=1)
    """Datacenters to try, in order; the first with a healthy instance wins. Default: the agent's own."""
    strategy: Literal["health_weighted", "random", "round_robin", "first"] = "health_weighted"
    """How to pick one instance among the healthy ones."""
    format: Annotated[Text, AfterValidator(_format_template)] = "{address}:{port}"
    """The value: ``{address}`` (``{host}``: IPv6 in brackets), ``{port}``, ``{id}``, ``{node}``, ``{datacenter}``,
    ``{service}``, ``{meta[KEY]}``, ``{tags}``."""
    include_warning: bool = False
    """Also use instances whose checks warn (never critical ones)."""


class KVDependency(_DependencyOptions):
    """A KV value this service needs; a key ending with ``/`` takes every key under it, as a JSON map."""

    kv: Text
    """The full key (not under ``kv.prefix``); ending with ``/`` for every key under a prefix."""
    datacenter: Text | None = None
    """Read from this datacenter; default: the agent's own."""


def _dependency_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        found = [k for k in ("service", "kv") if k in value]
        return found[0] if len(found) == 1 else None
    if isinstance(value, ServiceDependency):
        return "service"
    if isinstance(value, KVDependency):
        return "kv"
    return None


Dependency = Annotated[
    Annotated[ServiceDependency, Tag("service")] | Annotated[KVDependency, Tag("kv")],
    Discriminator(
        _dependency_kind,
        custom_error_type="dependency_kind",
        custom_error_message="a dependency is a map with exactly one of: service, kv",
    ),
]


class Outputs(_Model):
    """Files the resolved dependencies are written to, relative to the manifest's folder."""

    env_file: Text | None = None
    """``KEY=value`` lines, shell-safe quoting, stable order (docker --env-file, systemd EnvironmentFile, source)."""
    json_file: Text | None = None
    """Every dependency with its value, source, age and all healthy instances, as JSON."""
    yaml_file: Text | None = None
    """The same as ``json_file``, as YAML."""
    mode: Annotated[str, Field(pattern=r"^0?[0-7]{3}$")] | None = None
    """File mode for new output files, e.g. ``"0640"``; an existing file keeps its mode."""


class Manifest(_Model):
    """What one service (or a group owned by one team) puts into Consul and needs out of it."""

    version: Literal[1]
    """The manifest format version."""
    owner: Owner | None = None
    """Who owns what this manifest creates; prune and destroy touch only the owner's things. Default: the file stem."""
    prune: bool = False
    """Remove this owner's services and keys that are no longer declared, on every apply."""
    defaults: Defaults = Field(default_factory=Defaults)
    """Values merged into every service."""
    services: list[Service] = Field(default_factory=list)
    """Service instances to register with the local agent."""
    kv: KV = Field(default_factory=KV)
    """Keys to seed (create-only) or enforce (kept equal)."""
    dependencies: dict[DependencyName, Dependency] = Field(default_factory=dict)
    """What this service needs, each resolved into an output variable of the same name."""
    outputs: Outputs = Field(default_factory=Outputs)
    """Where ``render`` and ``run`` write the resolved dependencies."""


def effective_address(service: Service, defaults: Defaults) -> str | None:
    """The address a service registers with after ``defaults`` are applied."""
    return service.address if service.address is not None else defaults.address


def effective_service_id(service: Service, defaults: Defaults) -> str:
    """The instance id: explicit, else ``<name>-<address>-<port>`` (missing parts left out)."""
    if service.id is not None:
        return service.id
    parts = [service.name, effective_address(service, defaults), str(service.port) if service.port else None]
    return re.sub(r"[^A-Za-z0-9_.:@-]", "-", "-".join(p for p in parts if p))
