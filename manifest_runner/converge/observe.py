"""Consul -> the observed state of one owner, with the fewest requests.

Two requests in the usual case, whatever the size of the manifest: one filtered read of the agent's services (this
owner's, plus any service holding an id the manifest wants, so that a foreign one is seen and never overwritten),
and one read-only transaction with a ``get-tree`` for each KV root of the manifest and for the ownership record.
Keys the record names outside those roots (left behind when a prefix changed) cost one more transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from manifest_runner.consul.client import ConsulClient
from manifest_runner.consul.payloads import AgentService, KVPair
from manifest_runner.converge.ownership import OwnershipRecord
from manifest_runner.converge.state import DesiredState, KVEntry, ObservedState, ServiceSpec, kv_roots
from manifest_runner.marks import STATE_PREFIX, filter_literal, journal_prefix, owner_filter, record_key


def services_filter(owner: str, service_ids: Iterable[str]) -> str:
    """A filter expression for ``/v1/agent/services``: this owner's services and the wanted ids."""
    terms = [owner_filter(owner), *(f"ID == {filter_literal(sid)}" for sid in sorted(set(service_ids)))]
    return " or ".join(terms)


def observe(client: ConsulClient, desired: DesiredState) -> ObservedState:
    services = client.agent_services(services_filter(desired.owner, (s.service_id for s in desired.services)))
    observed_services = {sid: service_from_agent(service) for sid, service in services.items()}

    own_record = record_key(desired.owner)
    roots = [*desired.kv_roots, own_record]
    entries = {e.key: e for e in client.read_trees(roots)}
    record = read_record(desired.owner, entries)
    covered = [r for r in roots if r != own_record]
    if record is not None:
        outside = [k for k in record.keys if not any(k.startswith(root) for root in covered)]
        if outside:
            entries.update({e.key: e for e in client.read_trees(kv_roots(outside))})
    kv = {key: entry_from_consul(entry) for key, entry in entries.items() if not key.startswith(STATE_PREFIX)}
    return ObservedState(owner=desired.owner, services=observed_services, kv=kv, record=record)


def read_record(owner: str, entries: Mapping[str, KVPair]) -> OwnershipRecord | None:
    """The owner's record with any journal entries (left by an interrupted apply) merged in order."""
    entry = entries.get(record_key(owner))
    prefix = journal_prefix(owner)
    journal = sorted((e for k, e in entries.items() if k.startswith(prefix)), key=lambda e: e.create_index)
    if entry is None and not journal:
        return None
    record = (
        OwnershipRecord.decode(owner, entry.value, entry.modify_index) if entry is not None else OwnershipRecord(owner)
    )
    for item in journal:
        record = record.with_journal(item.value, item.create_index)
    return record


def service_from_agent(service: AgentService) -> ServiceSpec:
    return ServiceSpec(
        service_id=service.id,
        name=service.name,
        address=service.address,
        port=service.port,
        tags=service.tags,
        meta=service.meta,
        weights=service.weights,
        enable_tag_override=service.enable_tag_override,
    )


def entry_from_consul(entry: KVPair) -> KVEntry:
    return KVEntry(
        key=entry.key,
        value=entry.value,
        flags=entry.flags,
        modify_index=entry.modify_index,
        create_index=entry.create_index,
    )
