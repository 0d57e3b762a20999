"""Manifests -> the desired state of one owner: ids, merged defaults, ownership marks, hashes (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from manifest_runner.consul import kvcodec
from manifest_runner.converge.ownership import Origin
from manifest_runner.converge.state import CheckSpec, DesiredState, KVEntry, KVMode, ServiceSpec, checks_meta, freeze
from manifest_runner.manifest.checks import GrpcCheck, HttpCheck, TcpCheck, TtlCheck
from manifest_runner.manifest.model import Manifest, Service, effective_address, effective_service_id
from manifest_runner.marks import HASH_KEY, MANAGED_BY, MANAGED_BY_KEY, OWNER_KEY

if TYPE_CHECKING:
    from manifest_runner.manifest.loader import ManifestSet

CheckModel = HttpCheck | TcpCheck | GrpcCheck | TtlCheck


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
    )
    return _with_digest(spec)


def _with_digest(spec: ServiceSpec) -> ServiceSpec:
    meta = {**dict(spec.meta), **checks_meta(spec.checks)}
    meta[HASH_KEY] = spec.digest()
    return ServiceSpec(
        service_id=spec.service_id,
        name=spec.name,
        address=spec.address,
        port=spec.port,
        tags=spec.tags,
        meta=freeze(meta),
        weights=spec.weights,
        enable_tag_override=spec.enable_tag_override,
        checks=spec.checks,
        on_exit=spec.on_exit,
    )


def default_check_id(service_id: str, index: int, count: int) -> str:
    """Consul's own naming: ``service:<id>`` for a lone check, ``service:<id>:<n>`` (from 1) with several."""
    return f"service:{service_id}" if count == 1 else f"service:{service_id}:{index + 1}"


def check_spec(service_id: str, index: int, count: int, check: CheckModel) -> CheckSpec:
    """One manifest check -> the agent API's check definition (only the fields that were set)."""
    fields = {**_kind_fields(check), **_common_fields(check)}
    heartbeat = check.heartbeat if isinstance(check, TtlCheck) else None
    return CheckSpec.of(check.id or default_check_id(service_id, index, count), fields, heartbeat)


def _kind_fields(check: CheckModel) -> dict[str, Any]:
    if isinstance(check, TtlCheck):
        return {"TTL": check.ttl}
    fields: dict[str, Any]
    if isinstance(check, HttpCheck):
        fields = {"HTTP": check.http, "Method": check.method, "TLSSkipVerify": check.tls_skip_verify or None}
        fields["Header"] = {k: list(v) for k, v in sorted(check.header.items())} or None
    elif isinstance(check, TcpCheck):
        fields = {"TCP": check.tcp}
    else:
        fields = {"GRPC": check.grpc, "GRPCUseTLS": check.grpc_use_tls or None}
    fields.update(
        Interval=check.interval,
        Timeout=check.timeout,
        SuccessBeforePassing=check.success_before_passing or None,
        FailuresBeforeCritical=check.failures_before_critical or None,
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
