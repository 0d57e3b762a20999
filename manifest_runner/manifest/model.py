"""The manifest, version 1, as pydantic models: the contract users and their GitOps repositories rely on.

Every model is frozen and rejects unknown fields; each field's docstring becomes its description in the JSON Schema
(``schemas/manifest.schema.json``, see :mod:`manifest_runner.manifest.jsonschema`), which editors use to complete and
check manifests. Pure: no I/O.

Validation that needs more than one field at a time and must point at a precise place (duplicate service ids, a key
in both ``seed`` and ``enforce``, clashes across files) lives in :mod:`.crosscheck`, so that every
problem is reported at its own ``file:line:col``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    Discriminator,
    Field,
    Tag,
    field_validator,
    model_validator,
)

from manifest_runner.manifest.checks import Check, GrpcCheck, HttpCheck, TcpCheck, TtlCheck
from manifest_runner.manifest.fields import (
    DependencyName,
    Duration,
    KVKey,
    KVValue,
    MetaKey,
    MetaValue,
    Model,
    Owner,
    Port,
    ServiceId,
    ServiceName,
    Text,
    kv_path_problem,
)
from manifest_runner.manifest.formatting import format_problem
from manifest_runner.marks import OWN_META_PREFIX, RESERVED_META_KEYS, RESERVED_META_PREFIX
from manifest_runner.util.durations import parse_duration

USER_META_KEYS = 64 - 3 - 8
"""Consul allows 64 meta keys; the runner keeps three marks and up to eight chunks of check definitions."""


class Weights(Model):
    """How much traffic an instance should get relative to others, by health (Consul's service weights)."""

    passing: Annotated[int, Field(ge=1, le=65535)] = 1
    """Weight while every check passes."""
    warning: Annotated[int, Field(ge=0, le=65535)] = 1
    """Weight while a check warns."""


def _meta(value: dict[str, str]) -> dict[str, str]:
    reserved = sorted(
        k for k in value if k in RESERVED_META_KEYS or k.startswith((RESERVED_META_PREFIX, OWN_META_PREFIX))
    )
    if reserved:
        raise ValueError(
            f"meta keys {reserved} are reserved (consul-manifest writes managed-by and manifest-*, Consul consul-*)"
        )
    if len(value) > USER_META_KEYS:
        raise ValueError(f"at most {USER_META_KEYS} meta keys (Consul allows 64; the runner keeps up to 11)")
    return value


Meta = Annotated[dict[MetaKey, MetaValue], AfterValidator(_meta)]


class Defaults(Model):
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


class TaggedAddress(Model):
    address: Text
    port: Port


class Upstream(Model):
    """A service the sidecar proxy connects to, listening locally for the application."""

    destination_name: ServiceName
    """The service to reach."""
    local_bind_port: Port
    """The local port the application connects to."""
    local_bind_address: Text | None = None
    """The local address to listen on; default 127.0.0.1."""
    datacenter: Text | None = None
    """The datacenter of the destination; default: this one."""
    destination_type: Literal["service", "prepared_query"] = "service"


class SidecarProxy(Model):
    upstreams: list[Upstream] = Field(default_factory=list)
    """Services the application reaches through the proxy."""
    config: dict[str, Any] = Field(default_factory=dict)
    """Free-form proxy configuration, passed to the proxy as it is."""


class SidecarService(Model):
    """A Connect sidecar proxy registered along with the service (``<id>-sidecar-proxy``), deregistered with it."""

    port: Port | None = None
    """The proxy's public port; default: one the agent picks from its sidecar port range."""
    tags: list[Text] | None = None
    """Default: the service's tags."""
    meta: Meta | None = None
    """Default: the service's meta."""
    proxy: SidecarProxy = Field(default_factory=SidecarProxy)


class Connect(Model):
    """Consul Connect (service mesh) settings of a service."""

    sidecar_service: SidecarService | None = None
    """Register a sidecar proxy with the service."""
    native: bool = False
    """The service speaks Connect itself (no proxy)."""


class ExternalNode(Model):
    """A node no Consul agent runs on: the service is registered in the catalog, and its checks are run by
    consul-esm (the node carries the ``external-node`` and ``external-probe`` meta it looks for)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")]
    """The node's name in the catalog."""
    address: Text
    """The node's address (an IP or a host name)."""
    meta: Meta = Field(default_factory=dict)
    """More node meta."""


class Service(Model):
    """One service instance: registered with the local Consul agent, or (with ``node``) in the catalog on an
    external node."""

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
    tagged_addresses: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")], TaggedAddress] = Field(
        default_factory=dict
    )
    """Other addresses of the service by tag: ``lan``, ``wan``, ``lan_ipv4``, ``wan_ipv6``..."""
    connect: Connect | None = None
    """Consul Connect: a sidecar proxy, or native."""
    node: ExternalNode | None = None
    """Register on this external node, in the catalog, instead of with the local agent."""

    @model_validator(mode="after")
    def _external_limits(self) -> Service:
        if self.node is not None:
            if self.connect is not None:
                raise ValueError("a service on an external node cannot have connect: sidecars run with an agent")
            bad = [c for c in self.checks if not isinstance(c, (HttpCheck, TcpCheck, GrpcCheck, TtlCheck))]
            if bad:
                raise ValueError("a service on an external node takes http, tcp, grpc and ttl checks (consul-esm's)")
        return self


class KV(Model):
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
        problem = kv_path_problem(value, folder=True) if value else None
        if problem:
            raise ValueError(f"{problem}; a prefix is a folder like 'billing/'")
        return value


class _DependencyOptions(Model):
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


def _dependency_key(value: str) -> str:
    problem = kv_path_problem(value, folder=value.endswith("/"))
    if problem:
        raise ValueError(problem)
    return value


class KVDependency(_DependencyOptions):
    """A KV value this service needs; a key ending with ``/`` takes every key under it, as a JSON map."""

    kv: Annotated[Text, AfterValidator(_dependency_key)]
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


class Wait(Model):
    """Quiescence, as consul-template's ``wait``: act once ``min`` passes without a further change, and at the latest
    ``max`` after the first change of a burst (so that constant churn still gets through)."""

    min: Duration
    """Quiet time after the last change."""
    max: Duration | None = None
    """The longest a change waits; default: four times ``min``."""

    @model_validator(mode="after")
    def _max_not_below_min(self) -> Wait:
        if self.max is not None and parse_duration(self.max) < parse_duration(self.min):
            raise ValueError(f"wait.max ({self.max}) is shorter than wait.min ({self.min})")
        return self


class Reads(Model):
    """How dependencies are read from Consul (``render``, ``exec`` and the watches of ``run``)."""

    consistency: Literal["stale", "default", "cached"] = "stale"
    """``stale``: any server answers, unless it has been out of touch with the leader for over ``max_stale`` (then
    the leader is asked): reads spread over every server. ``default``: the leader answers (Consul's default).
    ``cached``: the local agent's cache answers (one background query per distinct read, shared by every client of
    the agent; KV reads are then ``stale``)."""
    max_stale: Duration = "2s"
    """With ``stale``: the most a server may lag behind the leader for its answer to be used."""


def _env_prefix(value: str) -> str:
    if value and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
        raise ValueError(f"{value!r} cannot start an environment variable name (letters, digits, _)")
    return value


class EnvFromKV(Model):
    """envconsul's way: one variable per key under a KV prefix."""

    kv: Annotated[Text, AfterValidator(_dependency_key)]
    """The prefix (ending with ``/``); nested keys are joined with ``_`` (``db/pool/size`` -> ``db_pool_size``)."""
    prefix: Annotated[str, AfterValidator(_env_prefix)] = ""
    """Put before every variable name, e.g. ``APP_``."""
    upcase: bool = False
    """Upper-case the names."""
    datacenter: Text | None = None
    """Read from this datacenter; default: the agent's own."""
    optional: bool = False
    """No key under the prefix (and no cached value) gives no variable instead of an error."""
    max_age: Duration | None = None
    """The oldest last-known-good values to use when Consul cannot answer."""

    @field_validator("kv")
    @classmethod
    def _a_folder(cls, value: str) -> str:
        if not value.endswith("/"):
            raise ValueError("env_from.kv is a prefix: end it with '/'")
        return value


class EnvFromService(Model):
    """A service as ``<NAME>_ADDRESS``, ``<NAME>_PORT`` and ``<NAME>_URL``."""

    service: ServiceName
    name: Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")] | None = None
    """The variables' stem; default: the service name, upper-cased, ``-`` and ``.`` as ``_``."""
    tag: Text | None = None
    datacenters: list[Text] | None = Field(default=None, min_length=1)
    strategy: Literal["health_weighted", "random", "round_robin", "first"] = "health_weighted"
    scheme: Annotated[str, Field(pattern=r"^[a-z][a-z0-9+.-]*$")] = "http"
    """The scheme of ``<NAME>_URL``."""
    include_warning: bool = False
    optional: bool = False
    max_age: Duration | None = None


def _env_from_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        found = [k for k in ("service", "kv") if k in value]
        return found[0] if len(found) == 1 else None
    return "service" if isinstance(value, EnvFromService) else "kv" if isinstance(value, EnvFromKV) else None


EnvFrom = Annotated[
    Annotated[EnvFromService, Tag("service")] | Annotated[EnvFromKV, Tag("kv")],
    Discriminator(
        _env_from_kind,
        custom_error_type="env_from_kind",
        custom_error_message="an env_from entry is a map with exactly one of: service, kv",
    ),
]


class Template(Model):
    """A file rendered from a Jinja2 template (sandboxed) with Consul's data, as consul-template does."""

    source: Text
    """The template file, relative to the manifest's folder."""
    destination: Text
    """The file to write, relative to the manifest's folder; replaced atomically, only when its bytes change."""
    perms: Annotated[str, Field(pattern=r"^0?[0-7]{3}$")] | None = None
    """The new file's mode, e.g. ``"0644"``; default ``"0600"`` (an existing file keeps its mode)."""
    command: Text | list[Text] | None = None
    """Run after the file changed (``nginx -s reload``): a list runs without a shell, a text with ``sh -c``."""
    command_timeout: Duration = "30s"
    """How long the command may take before it is killed."""
    wait: Wait | None = None
    """With ``run``: render once changes settle."""
    backup: bool = False
    """Keep the previous file as ``<destination>.bak``."""


class Outputs(Model):
    """Files the resolved dependencies are written to, relative to the manifest's folder."""

    env_file: Text | None = None
    """``KEY=value`` lines, shell-safe quoting, stable order (docker --env-file, systemd EnvironmentFile, source)."""
    json_file: Text | None = None
    """Every dependency with its value, source, age and all healthy instances, as JSON."""
    yaml_file: Text | None = None
    """The same as ``json_file``, as YAML."""
    mode: Annotated[str, Field(pattern=r"^0?[0-7]{3}$")] | None = None
    """File mode for new output files, e.g. ``"0640"``; default ``"0600"`` (they may hold secrets). An existing file
    keeps its mode."""
    follow_symlinks: bool = False
    """Write through a symbolic link at an output path even when it is dangling or leads outside its folder."""
    wait: Wait | None = None
    """With ``run``: write the files once changes settle (``min`` of quiet, at the latest ``max``), instead of at
    every change."""
    templates: list[Template] = Field(default_factory=list)
    """Files rendered from templates (nginx upstreams, application configs), as consul-template does."""


class Manifest(Model):
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
    reads: Reads = Field(default_factory=Reads)
    """How the dependencies are read from Consul."""
    env_from: list[EnvFrom] = Field(default_factory=list)
    """envconsul's way: variables from every key under a KV prefix, or from a service."""
    allow_script_checks: bool = False
    """Allow script and docker checks, which run commands on the agent's host (the agent must allow them too)."""


def effective_address(service: Service, defaults: Defaults) -> str | None:
    """The address a service registers with after ``defaults`` are applied."""
    return service.address if service.address is not None else defaults.address


def effective_service_id(service: Service, defaults: Defaults) -> str:
    """The instance id: explicit, else ``<name>-<address>-<port>`` (missing parts left out)."""
    if service.id is not None:
        return service.id
    parts = [service.name, effective_address(service, defaults), str(service.port) if service.port else None]
    return re.sub(r"[^A-Za-z0-9_.:@-]", "-", "-".join(p for p in parts if p))


def env_from_stem(entry: EnvFromService) -> str:
    """The stem of a service's variables: its ``name``, else the service name upper-cased (``-``, ``.`` as ``_``)."""
    return entry.name or re.sub(r"[^A-Za-z0-9_]", "_", entry.service).upper()
