"""Consul -> the observed state of one owner, with the fewest requests.

Two requests in the usual case, whatever the size of the manifest: one filtered read of the agent's services (this
owner's, plus any service holding an id the manifest wants, so that a foreign one is seen and never overwritten),
and one read-only transaction with a ``get-tree`` for each KV root of the manifest and for the ownership record.
Keys the record names outside those roots (left behind when a prefix changed) cost one more transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from manifest_runner.consistency import STATE_PREFIX
from manifest_runner.consul.client import ConsulClient
from manifest_runner.state import DesiredState, KVEntry, ObservedState, OwnershipRecord, ServiceSpec, freeze, kv_roots


def record_key(owner: str) -> str:
    return f"{STATE_PREFIX}owners/{owner}"


def journal_prefix(owner: str) -> str:
    return f"{record_key(owner)}.journal/"


def lock_key(owner: str) -> str:
    return f"{STATE_PREFIX}locks/{owner}"


def services_filter(owner: str, service_ids: Iterable[str]) -> str:
    """A filter expression for ``/v1/agent/services``: this owner's services and the wanted ids."""
    terms = [f'Meta["manifest-owner"] == "{owner}"', *(f'ID == "{sid}"' for sid in sorted(set(service_ids)))]
    return " or ".join(terms)


def observe(client: ConsulClient, desired: DesiredState) -> ObservedState:
    services = client.agent_services(services_filter(desired.owner, (s.service_id for s in desired.services)))
    observed_services = {sid: service_from_agent(payload) for sid, payload in services.items()}

    own_record = record_key(desired.owner)
    roots = [*desired.kv_roots, own_record]
    entries = {e["Key"]: e for e in client.read_trees(roots)}
    record = read_record(desired.owner, entries)
    covered = [r for r in roots if r != own_record]
    if record is not None:
        outside = [k for k in record.keys if not any(k.startswith(root) for root in covered)]
        if outside:
            entries.update({e["Key"]: e for e in client.read_trees(kv_roots(outside))})
    kv = {key: entry_from_consul(entry) for key, entry in entries.items() if not key.startswith(STATE_PREFIX)}
    return ObservedState(owner=desired.owner, services=observed_services, kv=kv, record=record)


def read_record(owner: str, entries: Mapping[str, Mapping[str, Any]]) -> OwnershipRecord | None:
    """The owner's record with any journal entries (left by an interrupted apply) merged in order."""
    entry = entries.get(record_key(owner))
    prefix = journal_prefix(owner)
    journal = sorted((e for k, e in entries.items() if k.startswith(prefix)), key=lambda e: int(e["CreateIndex"]))
    if entry is None and not journal:
        return None
    record = (
        OwnershipRecord.decode(owner, entry["Value"], int(entry["ModifyIndex"]))
        if entry is not None
        else OwnershipRecord(owner)
    )
    for item in journal:
        record = record.with_journal(item["Value"], int(item["CreateIndex"]))
    return record


def service_from_agent(payload: Mapping[str, Any]) -> ServiceSpec:
    weights = payload.get("Weights") or {}
    return ServiceSpec(
        service_id=str(payload["ID"]),
        name=str(payload.get("Service", "")),
        address=str(payload.get("Address") or ""),
        port=int(payload.get("Port") or 0),
        tags=tuple(payload.get("Tags") or ()),
        meta=freeze(payload.get("Meta") or {}),
        weights=(int(weights.get("Passing", 1)), int(weights.get("Warning", 1))),
        enable_tag_override=bool(payload.get("EnableTagOverride", False)),
    )


def entry_from_consul(entry: Mapping[str, Any]) -> KVEntry:
    return KVEntry(
        key=str(entry["Key"]),
        value=bytes(entry.get("Value") or b""),
        flags=int(entry.get("Flags") or 0),
        modify_index=int(entry.get("ModifyIndex") or 0),
        create_index=int(entry.get("CreateIndex") or 0),
    )
