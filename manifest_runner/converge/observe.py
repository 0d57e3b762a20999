"""Consul -> the observed state of one owner, with reads that are proven complete.

Consul filters list reads by the token's rights without saying so: with a token that may not read a prefix, a
recursive read of it answers "nothing", and a plan built on it would create what exists (or destroy nothing). So a
list is trusted only once a direct read proved it could see: the owner's record and each KV root are read directly
(a refusal is 403 there, where the list said nothing), and so is each wanted service the list did not show (404
absent, 403 hidden). These proofs run concurrently with the lists.

In the usual case, whatever the size of the manifest: the agent's services (filtered to this owner and the ids it
wants), its checks (when the owner has services), one read-only transaction with a ``get-tree`` for each KV root and
for the ownership record, and one direct read for the record and for each root. Keys the record names outside those
roots (left behind when a prefix changed) cost one more transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TypeVar

from manifest_runner.consul.client import ConsulClient
from manifest_runner.consul.payloads import AgentCheck, AgentService, KVPair
from manifest_runner.converge.ownership import OwnershipRecord
from manifest_runner.converge.state import (
    DesiredState,
    KVEntry,
    ObservedCheck,
    ObservedState,
    ServiceSpec,
    checks_from_meta,
    kv_roots,
)
from manifest_runner.errors import ConsulRefused
from manifest_runner.marks import (
    MANAGED_BY,
    MANAGED_BY_KEY,
    OWNER_KEY,
    STATE_PREFIX,
    filter_literal,
    journal_prefix,
    lock_key,
    owner_filter,
    record_key,
)

PROOF_THREADS = 8
T = TypeVar("T")


def services_filter(owner: str, service_ids: Iterable[str]) -> str:
    """A filter expression for ``/v1/agent/services``: this owner's services and the wanted ids."""
    terms = [owner_filter(owner), *(f"ID == {filter_literal(sid)}" for sid in sorted(set(service_ids)))]
    return " or ".join(terms)


def observe(client: ConsulClient, desired: DesiredState, *, for_apply: bool = False) -> ObservedState:
    """``for_apply``: also read the owner's lock key, first (see ``ObservedState.lock_seen_free``)."""
    own_record = record_key(desired.owner)
    roots = [*desired.kv_roots, own_record]
    wanted_ids = [s.service_id for s in desired.services]
    # The lock key is read before anything else: if it has not moved by the time this applier takes the lock, no
    # other applier wrote anything since any of the reads below.
    seen_free = _lock_seen_free(client, desired.owner) if for_apply else None
    with ThreadPoolExecutor(max_workers=PROOF_THREADS, thread_name_prefix="observe") as pool:
        listed = pool.submit(client.agent_services, services_filter(desired.owner, wanted_ids))
        checks = pool.submit(client.agent_checks) if desired.services else None
        external = pool.submit(_external, client, desired)
        trees = pool.submit(client.read_trees, roots)
        proofs = [pool.submit(_prove_kv, client, root) for root in [own_record, *desired.kv_roots]]
        services = _without_sidecars(listed.result())
        agent_wanted = DesiredState(desired.owner, tuple(s for s in desired.services if not s.node))
        found = list(pool.map(lambda sid: _prove_service(client, sid, desired), _hidden(agent_wanted, services)))
        for proof in proofs:
            proof.result()
        entries = {e.key: e for e in trees.result()}
    services = {**services, **{s.id: s for s in found if s is not None}}
    seen = checks.result() if checks is not None else client.agent_checks() if services else {}
    observed_services = {sid: service_from_agent(service, seen) for sid, service in services.items()}
    observed_services.update(external.result())

    record = read_record(desired.owner, entries)
    covered = [r for r in roots if r != own_record]
    if record is not None:
        outside = [k for k in record.keys if not any(k.startswith(root) for root in covered)]
        if outside:
            entries.update({e.key: e for e in client.read_trees(kv_roots(outside))})
    kv = {key: entry_from_consul(entry) for key, entry in entries.items() if not key.startswith(STATE_PREFIX)}
    return ObservedState(
        owner=desired.owner, services=observed_services, kv=kv, record=record, lock_seen_free=seen_free
    )


def _lock_seen_free(client: ConsulClient, owner: str) -> int | None:
    """The lock key's ModifyIndex when free, 0 when absent, None when held or not readable (a token that may not
    read it cannot take it either: that is said when the lock is taken, if there is anything to write)."""
    try:
        _, entries = client.kv_get(lock_key(owner))
    except ConsulRefused:
        return None
    if not entries:
        return 0
    return None if entries[0].session else entries[0].modify_index


def _without_sidecars(services: Mapping[str, AgentService]) -> dict[str, AgentService]:
    """The services without the Connect sidecars registered with them: a sidecar inherits its service's meta (our
    marks included) and goes with it; it is part of the service's registration, not a service of its own."""
    return {
        sid: s
        for sid, s in services.items()
        if not (s.kind == "connect-proxy" and s.proxy_destination and s.proxy_destination in services)
    }


def _external(client: ConsulClient, desired: DesiredState) -> dict[str, ServiceSpec]:
    """This owner's services on external nodes (and the wanted ids there, whoever owns them): the nodes the
    manifest names, and every node consul-manifest registered (where a service no longer declared may be)."""
    nodes = {s.node for s in desired.services if s.node}
    nodes |= set(client.catalog_nodes(f"{MANAGED_BY_KEY}:{MANAGED_BY}"))
    wanted = {(s.node, s.service_id) for s in desired.services if s.node}
    found: dict[str, ServiceSpec] = {}
    for node in sorted(nodes):
        catalog = client.catalog_node(node)
        if catalog is None:
            continue
        mine = {
            sid: s
            for sid, s in catalog.services.items()
            if (node, sid) in wanted or dict(s.meta).get(OWNER_KEY) == desired.owner
        }
        if not mine:
            continue
        checks = client.node_checks(node)
        for sid, service in mine.items():
            spec = service_from_agent(service, checks)
            found[sid] = replace(spec, node=node, node_address=catalog.address, node_meta=catalog.meta)
    return found


def _hidden(desired: DesiredState, listed: Mapping[str, AgentService]) -> list[str]:
    """Wanted ids the list did not show, one per service name: ACL rules are by name (``service``,
    ``service_prefix``), so one id read directly proves (404) that the list could see every id of its name."""
    by_name: dict[str, str] = {}
    for spec in desired.services:
        if spec.service_id not in listed:
            by_name.setdefault(spec.name, spec.service_id)
    return sorted(by_name.values())


def _prove_kv(client: ConsulClient, key: str) -> None:
    """A direct read of ``key``: refused (403) when the token may not read it, where a tree read says nothing."""
    _refused_as(
        lambda: client.kv_get(key),
        f'reading {key!r} is denied: the plan needs key_prefix "{key}" {{ policy = "read" }} (a token that cannot '
        "read it sees nothing there, and would plan to create what exists)",
    )


def _prove_service(client: ConsulClient, service_id: str, desired: DesiredState) -> AgentService | None:
    name = next((s.name for s in desired.services if s.service_id == service_id), service_id)
    return _refused_as(
        lambda: client.agent_service(service_id),
        f'service {service_id!r} exists but this token may not read it: the plan needs service "{name}" '
        '{ policy = "read" }',
    )


def _refused_as(call: Callable[[], T], message: str) -> T:
    try:
        return call()
    except ConsulRefused as err:
        raise ConsulRefused(message, operation=err.operation, status=err.status) from None


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


def service_from_agent(service: AgentService, checks: Mapping[str, AgentCheck] | None = None) -> ServiceSpec:
    """What the agent has: its visible fields, the check definitions last applied (from the meta, when ours) and
    what the agent shows of its checks now."""
    meta = dict(service.meta)
    seen = tuple(
        sorted(
            (
                ObservedCheck(c.check_id, c.kind, c.name, c.notes, c.status)
                for c in (checks or {}).values()
                if c.service_id == service.id
            ),
            key=lambda c: c.check_id,
        )
    )
    return ServiceSpec(
        service_id=service.id,
        name=service.name,
        address=service.address,
        port=service.port,
        tags=service.tags,
        meta=service.meta,
        weights=service.weights,
        enable_tag_override=service.enable_tag_override,
        checks=checks_from_meta(meta) or (),
        seen_checks=seen if checks is not None else None,
        tagged_addresses=service.tagged_addresses,
    )


def entry_from_consul(entry: KVPair) -> KVEntry:
    return KVEntry(
        key=entry.key,
        value=entry.value,
        flags=entry.flags,
        modify_index=entry.modify_index,
        create_index=entry.create_index,
    )
