"""Existing services and keys -> a manifest, so that a team can take over what it already runs.

``consul-manifest import`` writes the manifest; ``apply --adopt`` then claims each item that equals it (and plans
no other change). What Consul shows is written exactly: a service's name, id, address, port, tags, meta, weights,
tag override; a key's value, typed when consul-manifest wrote it, else as text. Consul 1.8 does not show a check's
definition (only its id, type and name): the checks of a service registered by consul-manifest come from its meta
(exact); any other check is written as a comment to complete by hand, and the service is adopted once the
manifest's checks have the same ids and kinds.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from manifest_runner.consul import kvcodec
from manifest_runner.consul.client import ConsulClient
from manifest_runner.converge.state import CheckSpec, checks_from_meta
from manifest_runner.errors import ManifestRunnerError
from manifest_runner.marks import MANAGED_BY_KEY, OWNER_KEY, STATE_PREFIX, is_internal_meta


class ImportError_(ManifestRunnerError):  # noqa: N801 - ImportError is Python's
    """Nothing matched what was asked to import."""


@dataclass
class Imported:
    manifest: CommentedMap
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        out = io.StringIO()
        yaml = YAML(typ="rt")
        yaml.indent(mapping=2, sequence=4, offset=2)
        yaml.width = 120
        out.write("# written by consul-manifest import; apply it with --adopt to take these over\n")
        yaml.dump(self.manifest, out)
        return out.getvalue()


def import_manifest(client: ConsulClient, owner: str, services: Iterable[str], prefix: str | None) -> Imported:
    """A manifest for ``owner`` from the agent's services named (by id or by name) and the keys under ``prefix``."""
    document = CommentedMap(version=1, owner=owner)
    result = Imported(document)
    wanted = list(services)
    if wanted:
        document["services"] = _services(client, wanted, result)
    if prefix:
        document["kv"] = _kv(client, prefix, result)
    if not wanted and not prefix:
        raise ImportError_("give at least one --service or a --kv-prefix to import")
    return result


def _services(client: ConsulClient, wanted: list[str], result: Imported) -> CommentedSeq:
    registered = client.agent_services()
    checks = client.agent_checks()
    chosen = [s for sid, s in sorted(registered.items()) if sid in wanted or s.name in wanted]
    missing = [w for w in wanted if not any(w in (s.id, s.name) for s in chosen)]
    if missing:
        raise ImportError_(f"no service with the id or name {', '.join(missing)} on this agent")
    out = CommentedSeq()
    for service in chosen:
        meta = dict(service.meta)
        entry = CommentedMap(name=service.name, id=service.id)
        if service.address:
            entry["address"] = service.address
        if service.port:
            entry["port"] = service.port
        if service.tags:
            entry["tags"] = list(service.tags)
        user_meta = {k: v for k, v in meta.items() if k not in (MANAGED_BY_KEY, OWNER_KEY) and not is_internal_meta(k)}
        if user_meta:
            entry["meta"] = dict(sorted(user_meta.items()))
        if service.weights != (1, 1):
            entry["weights"] = {"passing": service.weights[0], "warning": service.weights[1]}
        if service.enable_tag_override:
            entry["enable_tag_override"] = True
        kept = checks_from_meta(meta)
        theirs = sorted((c for c in checks.values() if c.service_id == service.id), key=lambda c: c.check_id)
        if kept is not None:
            entry["checks"] = [_check(c) for c in kept]
        elif theirs:
            described = ", ".join(f"{c.kind} {c.check_id!r} ({c.name})" for c in theirs)
            entry.yaml_set_comment_before_after_key(
                "name",
                before=f"checks not imported (Consul 1.8 does not show their definitions): {described}; "
                "add them with the same ids before apply --adopt",
                indent=4,
            )
            result.notes.append(f"service {service.id}: {len(theirs)} checks to complete by hand ({described})")
        out.append(entry)
    return out


def _check(check: CheckSpec) -> dict[str, Any]:
    """A check kept in a service's meta -> the manifest's fields."""
    fields = check.fields()
    kind = check.kind
    out: dict[str, Any] = {kind: fields.pop({"http": "HTTP", "tcp": "TCP", "grpc": "GRPC", "ttl": "TTL"}[kind])}
    out["id"] = check.check_id
    names = {
        "Interval": "interval",
        "Timeout": "timeout",
        "Name": "name",
        "Notes": "notes",
        "Status": "status",
        "DeregisterCriticalServiceAfter": "deregister_critical_after",
        "SuccessBeforePassing": "success_before_passing",
        "FailuresBeforeCritical": "failures_before_critical",
        "Method": "method",
        "Header": "header",
        "TLSSkipVerify": "tls_skip_verify",
        "GRPCUseTLS": "grpc_use_tls",
    }
    for key, value in fields.items():
        if key in names:
            out[names[key]] = value
    return out


def _kv(client: ConsulClient, prefix: str, result: Imported) -> CommentedMap:
    folder = prefix if prefix.endswith("/") else prefix + "/"
    _, entries = client.kv_get(folder, recurse=True)
    enforce: dict[str, Any] = {}
    for entry in entries:
        if entry.key.endswith("/") or entry.key.startswith(STATE_PREFIX):
            continue
        value = kvcodec.decode(entry.value, entry.flags)
        if value is None:
            result.notes.append(f"kv {entry.key}: binary, not importable as text: left out")
            continue
        if kvcodec.encode(value)[0] != entry.value:
            value = entry.value.decode("utf-8")  # keep the exact bytes: text
        enforce[entry.key[len(folder) :]] = value
    if not enforce:
        raise ImportError_(f"no key under {folder}")
    return CommentedMap(prefix=folder, enforce=_plain(enforce))


def _plain(value: Any) -> Any:
    """JSON values as YAML values (a JSON map stays a map)."""
    return json.loads(json.dumps(value))
