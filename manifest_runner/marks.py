"""What consul-manifest writes into Consul to recognise its own things, named once.

- **Service meta**: every service the runner registers carries ``managed-by: consul-manifest``, ``manifest-owner`` and
  ``manifest-hash`` (a hash of the whole desired registration, to see drift without reading the checks); a
  manifest may not set these keys, nor ``consul-*`` ones (Consul's own). Services registered by the library carry
  ``managed-by: consul-manifest-registry``, so that the runner never takes them for its own.
- **KV state**: everything under ``consul-manifest/`` is the tool's own bookkeeping (ownership records, their
  journals, apply locks); a manifest may not write there.
"""

from __future__ import annotations

MANAGED_BY_KEY = "managed-by"
OWNER_KEY = "manifest-owner"
HASH_KEY = "manifest-hash"
CHECKS_KEY = "manifest-checks"
CONNECT_KEY = "manifest-connect"
"""A hash of the ``Connect`` part of a registration, which the agent does not show (its meta it does)."""
"""The check definitions last applied (``manifest-checks``, ``manifest-checks-2``...): Consul 1.8 does not show them."""
RESERVED_META_KEYS = frozenset({MANAGED_BY_KEY, OWNER_KEY, HASH_KEY})
RESERVED_META_PREFIX = "consul-"
OWN_META_PREFIX = "manifest-"
"""Every meta key starting with ``manifest-`` is the runner's; a manifest may set none."""


def is_internal_meta(key: str) -> bool:
    """The runner's bookkeeping in a service's meta (not shown in plans as the user's meta)."""
    return key in (HASH_KEY, CONNECT_KEY) or key.startswith(CHECKS_KEY)


MANAGED_BY = "consul-manifest"
"""The ``managed-by`` value of services registered from a manifest."""
MANAGED_BY_LIBRARY = "consul-manifest-registry"
"""The ``managed-by`` value of services registered by :class:`~manifest_runner.ConsulRegistry`."""

STATE_PREFIX = "consul-manifest/"
"""Where the runner keeps its own records (ownership, journals, locks); manifests may not write under it."""


def record_key(owner: str) -> str:
    """The owner's ownership record: which KV keys it created, with their create indexes."""
    return f"{STATE_PREFIX}owners/{owner}"


def journal_prefix(owner: str) -> str:
    """Journal entries of the owner's record, written by large applies before the record is consolidated."""
    return f"{record_key(owner)}.journal/"


def set_key(name: str) -> str:
    """An apply set: the owners a folder (or a pipeline) applied, so that an owner whose manifest is gone is pruned."""
    return f"{STATE_PREFIX}sets/{name}"


def origin_key(repo_digest: str, owner: str) -> str:
    """Which owners were applied from one repository (``repo_digest``: a hash of its remote): orphans are found here."""
    return f"{STATE_PREFIX}origins/{repo_digest}/{owner}"


def lock_key(owner: str) -> str:
    """The key held (with a session) while one applier writes this owner's state."""
    return f"{STATE_PREFIX}locks/{owner}"


def owner_filter(owner: str) -> str:
    """A Consul filter expression selecting the services of ``owner``."""
    return f"Meta[{_quoted(OWNER_KEY)}] == {_quoted(owner)}"


def _quoted(text: str) -> str:
    """A string literal for Consul's filter language (go-bexpr): double quotes, with ``\\`` and ``"`` escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def filter_literal(text: str) -> str:
    """A value as a string literal in a Consul filter expression."""
    return _quoted(text)
