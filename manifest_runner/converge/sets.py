"""Owners whose manifest is gone: apply sets, and the index of the owners applied from each repository.

- An **apply set** (``--set NAME``, ``CONSUL_MANIFEST_SET``) is the list of owners one folder (or one pipeline)
  applied, kept at ``consul-manifest/sets/NAME``. With ``--prune``, an owner in the set whose manifest no longer
  exists is planned for deletion, everything it owns, and the set is then rewritten (compare-and-set).
- Without a set, each owner applied from a repository is indexed under ``consul-manifest/origins/<repo>/<owner>``
  (written with its record, see :mod:`.apply`), so that ``--prune`` can at least report an owner that was applied
  from one of the folders given and has no manifest any more.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from manifest_runner.consul.client import ConsulClient
from manifest_runner.converge.origin import repo_digest
from manifest_runner.converge.ownership import Origin
from manifest_runner.errors import ConsulProtocolError
from manifest_runner.marks import STATE_PREFIX, set_key


@dataclass(frozen=True, slots=True)
class ApplySet:
    name: str
    owners: tuple[str, ...] = ()
    modify_index: int = 0
    """0: the set does not exist yet."""


def read_set(client: ConsulClient, name: str) -> ApplySet:
    _, entries = client.kv_get(set_key(name))
    if not entries:
        return ApplySet(name)
    owners = _owners(entries[0].value)
    if owners is None:
        raise ConsulProtocolError(
            f"the apply set {set_key(name)} is not one; delete it to start the set again",
            operation=f"GET /v1/kv/{set_key(name)}",
        )
    return ApplySet(name, tuple(sorted(owners)), entries[0].modify_index)


def _owners(data: bytes) -> list[str] | None:
    try:
        document = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    owners = document.get("owners") if isinstance(document, dict) else None
    if not isinstance(owners, list) or not all(isinstance(o, str) for o in owners):
        return None
    return owners


def write_set(client: ConsulClient, current: ApplySet, owners: Iterable[str]) -> bool:
    """Rewrite the set with compare-and-set; False when someone else rewrote it meanwhile."""
    body = json.dumps({"owners": sorted(set(owners)), "version": 1}).encode()
    return client.kv_put(set_key(current.name), body, cas=current.modify_index)


def owners_from_folders(client: ConsulClient, origin: Origin, folders: Iterable[str]) -> dict[str, str]:
    """Owners indexed as applied from ``folders`` of ``origin``'s repository: owner -> folder."""
    prefix = f"{STATE_PREFIX}origins/{repo_digest(origin)}/"
    _, entries = client.kv_get(prefix, recurse=True)
    wanted = set(folders)
    found = {}
    for entry in entries:
        folder = entry.value.decode("utf-8", "replace")
        if folder in wanted:
            found[entry.key.removeprefix(prefix)] = folder
    return found
