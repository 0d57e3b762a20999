"""Manifests -> the desired state of one owner: ids, merged defaults, ownership marks, hashes (pure)."""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from manifest_runner.consul import kvcodec
from manifest_runner.converge.ownership import Origin
from manifest_runner.converge.state import CheckSpec, DesiredState, KVEntry, KVMode, ServiceSpec, checks_meta, freeze
from manifest_runner.manifest.checks import (
    AliasCheck,
    DockerCheck,
    GrpcCheck,
    H2PingCheck,
    HttpCheck,
    ScriptCheck,
    TcpCheck,
    TtlCheck,
)
from manifest_runner.manifest.model import Connect, Manifest, Service, effective_address, effective_service_id
from manifest_runner.marks import CONNECT_KEY, HASH_KEY, MANAGED_BY, MANAGED_BY_KEY, OWNER_KEY

if TYPE_CHECKING:
    from manifest_runner.manifest.loader import ManifestSet

CheckModel = HttpCheck | TcpCheck | GrpcCheck | TtlCheck | H2PingCheck | AliasCheck | ScriptCheck | DockerCheck
EXTERNAL_NODE_META = {"external-node": "true", "external-probe": "true"}
"""The node meta consul-esm looks for: it runs the checks of services on such nodes."""


def desired_state(owner: str, manifests: Iterable[Manifest], origin: Origin | None = None) -> DesiredState:
    """The union of one owner's manifests. ``prune`` is on when any of them asks for it."""
    services: list[ServiceSpec] = []
    entries: list[KVEntry] = []
    prune = False
    for manifest in manifests:
        prune = prune or manifest.prune
        services.extend(service_spec(owner, manifest, service) for service in manifest.services)
        sections: tuple[tuple[KVMode, dict[str, Any]], ...] = (
            ("seed", manifest.kv.seed),
            ("enforce", manifest.kv.enforce),
        )
        for mode, section in sections:
            for key, value in section.items():
                data, flags = kvcodec.encode(value)
                entries.append(KVEntry(manifest.kv.prefix + key, data, flags, mode))
    services.sort(key=lambda s: s.service_id)
    entries.sort(key=lambda e: e.key)
    return DesiredState(owner=owner, services=tuple(services), kv=tuple(entries), prune=prune, origin=origin)


def desired_states(
    manifests: ManifestSet, origins: Mapping[str, Origin | None] | None = None
) -> dict[str, DesiredState]:
    """Each owner's desired state, for every owner of the set (with its origin, when known)."""
    return {
        owner: desired_state(owner, [m.manifest for m in manifests.of_owner(owner)], (origins or {}).get(owner))
        for owner in manifests.owners
    }


def service_spec(owner: str, manifest: Manifest, service: Service) -> ServiceSpec:
    defaults = manifest.defaults
    service_id = effective_service_id(service, defaults)
    tags = tuple(dict.fromkeys([*defaults.tags, *service.tags]))
    meta = {**defaults.meta, **service.meta, MANAGED_BY_KEY: MANAGED_BY, OWNER_KEY: owner}
    weights = service.weights or defaults.weights
    checks = tuple(
        check_spec(service_id, index, len(service.checks), check) for index, check in enumerate(service.checks)
    )
    connect = ""
    if service.connect is not None:
        connect = json.dumps(connect_payload(service.connect), sort_keys=True, separators=(",", ":"))
        meta[CONNECT_KEY] = hashlib.sha256(connect.encode()).hexdigest()[:16]
    node = service.node
    spec = ServiceSpec(
        service_id=service_id,
        name=service.name,
        address=effective_address(service, defaults) or "",
        port=service.port or 0,
        tags=tags,
        meta=freeze(meta),
        weights=(weights.passing, weights.warning) if weights else (1, 1),
        enable_tag_override=service.enable_tag_override,
        checks=checks,
        on_exit=service.on_exit or defaults.on_exit,
        tagged_addresses=with_default_tagged_addresses(
            {tag: (t.address, t.port) for tag, t in service.tagged_addresses.items()},
            effective_address(service, defaults) or "",
            service.port or 0,
        ),
        connect=connect,
        node=node.name if node else "",
        node_address=node.address if node else "",
        node_meta=freeze({**node.meta, **EXTERNAL_NODE_META, MANAGED_BY_KEY: MANAGED_BY}) if node else (),
    )
    return _with_digest(spec)


def with_default_tagged_addresses(
    explicit: Mapping[str, tuple[str, int]], address: str, port: int
) -> tuple[tuple[str, str, int], ...]:
    """The tagged addresses as the agent keeps them: the explicit ones, plus ``lan_ipv4`` and ``wan_ipv4`` (or
    ``_ipv6``) set to the service's address and port when the address is an IP and they were not given (the agent
    adds them: without them here, every plan would see drift)."""
    found = dict(explicit)
    version: int = 0
    with contextlib.suppress(ValueError):
        version = ipaddress.ip_address(address).version
    if version:
        for tag in (f"lan_ipv{version}", f"wan_ipv{version}"):
            found.setdefault(tag, (address, port))
    return tuple(sorted((tag, a, p) for tag, (a, p) in found.items()))


def connect_payload(connect: Connect) -> dict[str, Any]:
    """The manifest's ``connect`` as the agent API's ``Connect`` object."""
    body: dict[str, Any] = {}
    if connect.native:
        body["Native"] = True
    sidecar = connect.sidecar_service
    if sidecar is not None:
        side: dict[str, Any] = {}
        if sidecar.port is not None:
            side["Port"] = sidecar.port
        if sidecar.tags is not None:
            side["Tags"] = list(sidecar.tags)
        if sidecar.meta is not None:
            side["Meta"] = dict(sidecar.meta)
        proxy: dict[str, Any] = {}
        if sidecar.proxy.upstreams:
            proxy["Upstreams"] = [
                {
                    k: v
                    for k, v in {
                        "DestinationType": u.destination_type,
                        "DestinationName": u.destination_name,
                        "LocalBindPort": u.local_bind_port,
                        "LocalBindAddress": u.local_bind_address,
                        "Datacenter": u.datacenter,
                    }.items()
                    if v is not None
                }
                for u in sidecar.proxy.upstreams
            ]
        if sidecar.proxy.config:
            proxy["Config"] = dict(sidecar.proxy.config)
        if proxy:
            side["Proxy"] = proxy
        body["SidecarService"] = side
    return body


def _with_digest(spec: ServiceSpec) -> ServiceSpec:
    meta = {**dict(spec.meta), **checks_meta(spec.checks)}
    meta[HASH_KEY] = spec.digest()
    return replace(spec, meta=freeze(meta))


def default_check_id(service_id: str, index: int, count: int, name: str | None = None) -> str:
    """``service:<id>:<name>`` for a named check (stable when checks are reordered); otherwise Consul's own naming:
    ``service:<id>`` for a lone check, ``service:<id>:<n>`` (from 1) with several."""
    if name:
        return f"service:{service_id}:{re.sub(r'[^A-Za-z0-9_.-]+', '-', name).strip('-') or index + 1}"
    return f"service:{service_id}" if count == 1 else f"service:{service_id}:{index + 1}"


def check_spec(service_id: str, index: int, count: int, check: CheckModel) -> CheckSpec:
    """One manifest check -> the agent API's check definition (only the fields that were set)."""
    fields = {**_kind_fields(check), **_common_fields(check)}
    heartbeat = check.heartbeat if isinstance(check, TtlCheck) else None
    return CheckSpec.of(check.id or default_check_id(service_id, index, count, check.name), fields, heartbeat)


def _kind_fields(check: CheckModel) -> dict[str, Any]:
    if isinstance(check, TtlCheck):
        return {"TTL": check.ttl}
    if isinstance(check, AliasCheck):
        return {k: v for k, v in {"AliasService": check.alias_service, "AliasNode": check.alias_node}.items() if v}
    fields: dict[str, Any]
    if isinstance(check, HttpCheck):
        fields = {
            "HTTP": check.http,
            "Method": check.method,
            "Body": check.body,
            "TLSSkipVerify": check.tls_skip_verify or None,
            "TLSServerName": check.tls_server_name,
        }
        fields["Header"] = {k: list(v) for k, v in sorted(check.header.items())} or None
    elif isinstance(check, TcpCheck):
        fields = {"TCP": check.tcp}
    elif isinstance(check, GrpcCheck):
        fields = {
            "GRPC": check.grpc,
            "GRPCUseTLS": check.grpc_use_tls or None,
            "TLSSkipVerify": check.tls_skip_verify or None,
            "TLSServerName": check.tls_server_name,
        }
    elif isinstance(check, H2PingCheck):
        fields = {"H2PING": check.h2ping, "H2PingUseTLS": check.h2ping_use_tls}
    elif isinstance(check, DockerCheck):
        fields = {"DockerContainerID": check.docker_container_id, "Args": list(check.args), "Shell": check.shell}
    else:
        fields = {"Args": list(check.args)}
    fields.update(
        Interval=check.interval,
        Timeout=check.timeout,
        SuccessBeforePassing=check.success_before_passing or None,
        FailuresBeforeCritical=check.failures_before_critical or None,
        OutputMaxSize=check.output_max_size,
    )
    return {k: v for k, v in fields.items() if v is not None}


def _common_fields(check: CheckModel) -> dict[str, Any]:
    fields = {
        "Name": check.name,
        "Notes": check.notes,
        "Status": check.status,
        "DeregisterCriticalServiceAfter": check.deregister_critical_after,
    }
    return {k: v for k, v in fields.items() if v is not None}
