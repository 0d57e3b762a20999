"""The KV store: reads (blocking or not), compare-and-set writes, and transactions under the server's limits."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from manifest_runner.consul import payloads
from manifest_runner.consul.base import LEADER, BaseClient, Freshness
from manifest_runner.consul.payloads import KVPair, PayloadError
from manifest_runner.consul.statuses import TxnFailed, TxnTooLarge
from manifest_runner.errors import ConsulProtocolError, ConsulRefused

TXN_BODY_LIMIT = 512 * 1024


class KVCalls(BaseClient):
    def kv_get(
        self,
        key: str,
        *,
        recurse: bool = False,
        datacenter: str | None = None,
        index: int | None = None,
        wait: str | None = None,
        timeout: float | None = None,
        freshness: Freshness = LEADER,
    ) -> tuple[int, list[KVPair]]:
        """Entries at ``key`` (or under it with ``recurse``), values decoded to bytes; ``[]`` when absent."""
        params: list[tuple[str, Any]] = self._dc(datacenter)
        if recurse:
            params.append(("recurse", "1"))
        self._blocking(params, index, wait)
        found, pairs = self.read(
            "GET",
            f"/v1/kv/{key}",
            payloads.kv_pairs,
            params,
            timeout=timeout,
            blocking=True,
            absent_ok=True,
            freshness=freshness.for_kv(),
        )
        return found, pairs or []

    def kv_keys(
        self,
        prefix: str,
        *,
        datacenter: str | None = None,
        index: int | None = None,
        wait: str | None = None,
        timeout: float | None = None,
        freshness: Freshness = LEADER,
    ) -> tuple[int, list[str]]:
        """The key names under ``prefix`` (a light way to block on a prefix)."""
        params: list[tuple[str, Any]] = [*self._dc(datacenter), ("keys", "1")]
        self._blocking(params, index, wait)
        found, keys = self.read(
            "GET",
            f"/v1/kv/{prefix}",
            payloads.kv_keys,
            params,
            timeout=timeout,
            blocking=True,
            absent_ok=True,
            freshness=freshness.for_kv(),
        )
        return found, keys or []

    def kv_put(
        self,
        key: str,
        value: bytes,
        *,
        flags: int | None = None,
        cas: int | None = None,
        acquire: str | None = None,
        release: str | None = None,
    ) -> bool:
        params: list[tuple[str, Any]] = []
        if flags is not None:
            params.append(("flags", flags))
        if cas is not None:
            params.append(("cas", cas))
        if acquire:
            params.append(("acquire", acquire))
        if release:
            params.append(("release", release))
        _, done = self.read("PUT", f"/v1/kv/{key}", lambda body: payloads.flag(body, "the answer"), params, value)
        return bool(done)

    def kv_delete(self, key: str, *, cas: int | None = None, recurse: bool = False) -> bool:
        params: list[tuple[str, Any]] = [("cas", cas)] if cas is not None else []
        if recurse:
            params.append(("recurse", "1"))
        _, done = self.read("DELETE", f"/v1/kv/{key}", lambda body: payloads.flag(body, "the answer"), params)
        return bool(done)

    def read_trees(self, prefixes: Iterable[str]) -> list[KVPair]:
        """Every entry under each prefix, in as few read-only transactions as the op limit allows (usually one)."""
        ops = [{"KV": {"Verb": "get-tree", "Key": prefix}} for prefix in dict.fromkeys(prefixes)]
        limit = self._op_limit or 64
        entries: list[KVPair] = []
        for start in range(0, len(ops), limit):
            entries.extend(self.txn(ops[start : start + limit], idempotent=True))
        return entries

    def txn(self, ops: list[dict[str, Any]], *, idempotent: bool = False) -> list[KVPair]:
        """One transaction; returns its KV results. Raises :class:`TxnFailed` (409) or :class:`TxnTooLarge` (413)."""
        try:
            answer = self.send("PUT", "/v1/txn", self._dc(None), data=json.dumps(ops), idempotent=idempotent)
        except TxnTooLarge as err:
            self._op_limit = err.limit
            raise
        decode = payloads.txn_errors if answer.status == 409 else payloads.txn_results
        try:
            body = payloads.json_body(answer.body)
            result = decode(body)
        except PayloadError as err:
            raise ConsulProtocolError(
                f"the answer is not what Consul sends ({err}); is this a Consul agent?",
                operation="PUT /v1/txn",
                status=answer.status,
            ) from None
        if answer.status == 409:
            errors: list[tuple[int, str]] = result  # type: ignore[assignment]
            denied = [what for _, what in errors if "permission denied" in what.lower()]
            if denied:  # an ACL refusal inside a transaction is a refusal like any other (exit 4), not a lost race
                raise ConsulRefused(
                    f"permission denied in the transaction ({denied[0]}); the token needs key_prefix write on the keys",
                    operation="PUT /v1/txn",
                    status=409,
                )
            raise TxnFailed(errors)
        return result  # type: ignore[return-value]


def txn_op_size(key: str, value_length: int) -> int:
    """The bytes one KV operation adds to a transaction's body, at most: JSON framing (verb, flags, index), the key
    (escaped, up to 6 bytes a character) and the value, base64-encoded."""
    return 120 + 6 * len(key) + 4 * ((value_length + 2) // 3)
