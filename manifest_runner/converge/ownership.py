"""An owner's record in Consul: which KV keys it created, what it last applied, and where it is applied from (pure).

Services are marked in their own meta instead (:mod:`manifest_runner.marks`); KV keys have no room for a mark (their
``Flags`` belong to the value's type), so the owner's keys are listed in one record per owner.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from manifest_runner.errors import ManifestRunnerError
from manifest_runner.marks import record_key

RECORD_VERSION = 2


@dataclass(frozen=True, slots=True)
class Origin:
    """Where an owner's manifests live: a repository (its remote, without credentials) and a folder in it.

    Two places that both say ``owner: consul`` cannot silently share it: the first apply records its origin, and an
    apply from another origin is a conflict (``--take-over`` moves an owner on purpose)."""

    repo: str
    folder: str

    def to_json(self) -> dict[str, str]:
        return {"repo": self.repo, "folder": self.folder}

    def __str__(self) -> str:
        return f"{self.repo}:{self.folder or '.'}"


@dataclass(frozen=True, slots=True)
class OwnershipRecord:
    """The KV keys one owner created, each with the ``CreateIndex`` Consul gave it, the hash of the value this owner
    last applied to each (to tell a manifest change from drift), and the owner's origin.

    Keeping the create index makes ownership exact: a key that someone deleted and created again has a new create
    index, so it is no longer ours, and prune will never delete it.

    Stored as JSON at ``consul-manifest/owners/<owner>``. Every key is claimed in the same transaction that creates
    it, so a crash can never leave a key we created unclaimed, nor claim a key we did not create:

    - an apply that fits in one transaction rewrites the record in it;
    - a larger apply writes, in each transaction but the last, a small *journal* entry
      (``consul-manifest/owners/<owner>.journal/<n>``) naming the keys it creates, updates and deletes; the last
      transaction rewrites the record with everything and deletes the journal. A journal left by a crash is merged
      on reading and consolidated by the next apply.

    A key created by the transaction that writes the record or a journal entry cannot know its index yet: it is
    stored as 0, meaning "this record's (or journal entry's) own create/modify index", which is exact.
    ``modify_index`` 0 means the record does not exist yet; ``journals`` counts unconsolidated journal entries.
    Version 1 records (keys and indexes only) are read as they are: what they last applied is unknown.
    """

    owner: str
    keys: Mapping[str, int] = field(default_factory=dict)
    modify_index: int = 0
    journals: int = 0
    applied: Mapping[str, str] = field(default_factory=dict)
    """Key -> hash of the value this owner last wrote (unknown for keys written before version 2)."""
    origin: Origin | None = None
    version: int = RECORD_VERSION

    def encode(self, created_now: frozenset[str] = frozenset()) -> bytes:
        keys = {key: 0 if key in created_now else index for key, index in self.keys.items()}
        document: dict[str, Any] = {
            "applied": {k: v for k, v in self.applied.items() if k in keys},
            "keys": keys,
            "owner": self.owner,
            "version": RECORD_VERSION,
        }
        if self.origin is not None:
            document["origin"] = self.origin.to_json()
        return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def decode(cls, owner: str, data: bytes | None, modify_index: int) -> OwnershipRecord:
        """The record as stored; :class:`OwnershipRecordError` when it is not one (edited by hand, say): planning
        from a record that cannot be read would forget every key the owner created."""
        parsed = _document(owner, data, "the ownership record")
        raw = parsed.get("keys")
        if not isinstance(raw, dict) or parsed.get("owner", owner) != owner:
            raise OwnershipRecordError(owner, "the ownership record has no key list of this owner")
        keys = {}
        for key, index in raw.items():
            if isinstance(index, bool) or not isinstance(index, int) or index < 0:
                raise OwnershipRecordError(owner, f"the ownership record names {key!r} with an index that is not one")
            keys[key] = index or modify_index
        applied = parsed.get("applied", {})
        if not isinstance(applied, dict) or not all(isinstance(v, str) for v in applied.values()):
            raise OwnershipRecordError(owner, "the ownership record's applied values are not hashes")
        version = parsed.get("version", 1)
        return cls(
            owner,
            keys,
            modify_index,
            applied={k: v for k, v in applied.items() if k in keys},
            origin=_origin(owner, parsed.get("origin")),
            version=version if isinstance(version, int) else 1,
        )

    def with_journal(self, data: bytes | None, create_index: int) -> OwnershipRecord:
        """This record with one journal entry applied (entries are applied in the order they were written)."""
        parsed = _document(self.owner, data, "a journal entry of the ownership record")
        created, deleted = parsed.get("created", []), parsed.get("deleted", [])
        applied = parsed.get("applied", {})
        if (
            not (isinstance(created, list) and isinstance(deleted, list) and isinstance(applied, dict))
            or not all(isinstance(k, str) for k in [*created, *deleted])
            or not all(isinstance(v, str) for v in applied.values())
        ):
            raise OwnershipRecordError(self.owner, "a journal entry of the ownership record lists no keys")
        keys = {k: v for k, v in self.keys.items() if k not in set(deleted)}
        keys.update(dict.fromkeys(created, create_index))
        hashes = {k: v for k, v in self.applied.items() if k in keys}
        hashes.update({k: v for k, v in applied.items() if k in keys})
        return OwnershipRecord(
            self.owner, keys, self.modify_index, self.journals + 1, hashes, self.origin, self.version
        )


class OwnershipRecordError(ManifestRunnerError):
    """The owner's record in Consul cannot be read: nothing is planned for the owner until it is fixed."""

    def __init__(self, owner: str, what: str) -> None:
        self.owner = owner
        super().__init__(
            f"{what} ({record_key(owner)}): nothing is planned for owner {owner!r}, since its keys would be "
            "forgotten; restore the record, or delete it and apply with --adopt to claim the keys that equal the "
            "manifest"
        )


def _document(owner: str, data: bytes | None, what: str) -> dict[str, Any]:
    try:
        parsed = json.loads((data or b"").decode("utf-8"))
    except (ValueError, RecursionError):
        raise OwnershipRecordError(owner, f"{what} is not JSON") from None
    if not isinstance(parsed, dict):
        raise OwnershipRecordError(owner, f"{what} is not a JSON object")
    return parsed


def _origin(owner: str, raw: Any) -> Origin | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or not isinstance(raw.get("repo"), str) or not isinstance(raw.get("folder"), str):
        raise OwnershipRecordError(owner, "the ownership record's origin is not a repository and a folder")
    return Origin(raw["repo"], raw["folder"])


def journal_entry(created: list[str], deleted: list[str], applied: Mapping[str, str] | None = None) -> bytes:
    document: dict[str, Any] = {"created": created, "deleted": deleted}
    if applied:
        document["applied"] = dict(applied)
    return json.dumps(document, separators=(",", ":")).encode()
