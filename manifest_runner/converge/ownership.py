"""Which KV keys an owner created: the ownership record, with the create index Consul gave each key (pure).

Services are marked in their own meta instead (:mod:`manifest_runner.marks`); KV keys have no room for a mark (their
``Flags`` belong to the value's type), so the owner's keys are listed in one record per owner.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class OwnershipRecord:
    """The KV keys one owner created, each with the ``CreateIndex`` Consul gave it.

    Services are marked in their own meta instead (they live on one agent; this record is global). Keeping the
    create index makes ownership exact: a key that someone deleted and created again has a new create index, so it
    is no longer ours, and prune will never delete it.

    Stored as JSON at ``consul-manifest/owners/<owner>``. Every key is claimed in the same transaction that creates
    it, so a crash can never leave a key we created unclaimed, nor claim a key we did not create:

    - an apply that fits in one transaction rewrites the record in it;
    - a larger apply writes, in each transaction but the last, a small *journal* entry
      (``consul-manifest/owners/<owner>.journal/<n>``) naming the keys it creates and deletes; the last transaction
      rewrites the record with everything and deletes the journal. A journal left by a crash is merged on reading
      and consolidated by the next apply.

    A key created by the transaction that writes the record or a journal entry cannot know its index yet: it is
    stored as 0, meaning "this record's (or journal entry's) own create/modify index", which is exact.
    ``modify_index`` 0 means the record does not exist yet; ``journals`` counts unconsolidated journal entries.
    """

    owner: str
    keys: Mapping[str, int] = field(default_factory=dict)
    modify_index: int = 0
    journals: int = 0

    def encode(self, created_now: frozenset[str] = frozenset()) -> bytes:
        keys = {key: 0 if key in created_now else index for key, index in self.keys.items()}
        document = {"keys": keys, "owner": self.owner, "version": 1}
        return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def decode(cls, owner: str, data: bytes | None, modify_index: int) -> OwnershipRecord:
        try:
            parsed = json.loads((data or b"{}").decode("utf-8"))
            raw = parsed.get("keys", {})
            keys = {str(k): int(v) or modify_index for k, v in raw.items()}
        except (ValueError, AttributeError, TypeError):
            keys = {}
        return cls(owner, keys, modify_index)

    def with_journal(self, data: bytes | None, create_index: int) -> OwnershipRecord:
        """This record with one journal entry applied (entries are applied in the order they were written)."""
        try:
            parsed = json.loads((data or b"{}").decode("utf-8"))
            created = [str(k) for k in parsed.get("created", [])]
            deleted = {str(k) for k in parsed.get("deleted", [])}
        except (ValueError, AttributeError, TypeError):
            created, deleted = [], set()
        keys = {k: v for k, v in self.keys.items() if k not in deleted}
        keys.update(dict.fromkeys(created, create_index))
        return OwnershipRecord(self.owner, keys, self.modify_index, self.journals + 1)


def journal_entry(created: list[str], deleted: list[str]) -> bytes:
    return json.dumps({"created": created, "deleted": deleted}, separators=(",", ":")).encode()
