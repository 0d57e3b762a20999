"""Sessions and locks: one applier per owner at a time, and the distributed locks of ``ConsulRegistry``.

A lock is a KV key acquired with a session (``PUT /v1/kv/<key>?acquire=<session>``). The session has a TTL and is
renewed from a background thread while the lock is held; if the holder dies, Consul invalidates the session within
about 2 x TTL and the key is free again after the session's lock-delay. Waiting uses blocking queries on the key, so
a waiter wakes as soon as the holder releases, without polling.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from manifest_runner.consul.client import ConsulClient, TxnFailed
from manifest_runner.errors import ConsulError, ConsulRequestError, LockTimeout
from manifest_runner.util.cancel import Cancel
from manifest_runner.util.durations import format_duration


@dataclass
class Lock:
    """A Consul lock on ``key``. ``with Lock(client, key, timeout=30):`` blocks until held or raises LockTimeout.

    ``timeout=0`` tries once (non-blocking): use :meth:`acquire` and check its result.
    """

    client: ConsulClient
    key: str
    timeout: float = 30.0
    ttl: float = 15.0
    lock_delay: float = 1.0
    name: str = "consul-manifest lock"
    session_id: str | None = field(default=None, init=False)
    acquired_at: float | None = field(default=None, init=False)
    released_at: float | None = field(default=None, init=False)
    _stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _renewer: threading.Thread | None = field(default=None, init=False, repr=False)
    lost: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    """Set when a renewal failed: the session may be gone, and with it the lock."""
    cancel: Cancel | None = None
    """When set while waiting, the wait ends at once and :meth:`acquire` raises :class:`Cancelled`."""
    seen_free: int | None = None
    """The key's ModifyIndex when the caller last saw it free (0: it did not exist). The first attempt then takes
    the lock only if the key is still exactly so, in one transaction; :attr:`unmoved` says whether it did."""
    unmoved: bool = field(default=False, init=False)
    """True when the lock was taken on a key that had not moved since ``seen_free``: nobody else took and released
    it in between."""

    @property
    def held(self) -> bool:
        return self.acquired_at is not None and self.released_at is None and not self.lost.is_set()

    def acquire(self) -> bool:
        """Try until ``timeout``; True when held. The session is created on the first call."""
        if self.session_id is None:
            self.session_id = self.client.session_create(
                self.name, format_duration(max(10.0, self.ttl)), lock_delay=format_duration(self.lock_delay)
            )
            self._start_renewing()  # while waiting too: a wait longer than the TTL must not lose the session
        holder = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}).encode()
        self.unmoved = False
        if self.seen_free is not None and self._take_if_unmoved(self.seen_free, holder):
            self.unmoved = True
            self.acquired_at = time.time()
            self.released_at = None
            return True
        deadline = time.monotonic() + self.timeout
        cancel = self.cancel or Cancel()
        index = 0
        waiter = self.client.clone()  # its own connection, cut at once when the wait is cancelled
        try:
            with cancel.on_cancel(waiter.abort):
                while True:
                    cancel.check()
                    if self.client.kv_put(self.key, holder, acquire=self.session_id):
                        self.acquired_at = time.time()
                        self.released_at = None
                        return True
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return False
                    index = self._wait(waiter, index, remaining, deadline, cancel)
        finally:
            waiter.close()

    def _take_if_unmoved(self, seen: int, holder: bytes) -> bool:
        """One transaction: the key is as it was seen (absent, or free at index ``seen``), and it is locked."""
        check: dict[str, Any] = (
            {"KV": {"Verb": "check-index", "Key": self.key, "Index": seen}}
            if seen
            else {"KV": {"Verb": "check-not-exists", "Key": self.key}}
        )
        value = base64.b64encode(holder).decode()
        take = {"KV": {"Verb": "lock", "Key": self.key, "Value": value, "Session": self.session_id}}
        try:
            self.client.txn([check, take])
        except (TxnFailed, ConsulRequestError):
            return False  # it moved (or the lock-delay runs): take it the ordinary way
        return True

    def _wait(self, waiter: ConsulClient, index: int, remaining: float, deadline: float, cancel: Cancel) -> int:
        """Held by another: wait on the key with a blocking query (woken when it changes), never past the deadline.
        Free but refused: the previous holder's lock-delay is running; retry shortly. Returns the next index."""
        wait = f"{max(1, min(int(remaining) + 1, 60))}s"
        try:
            new_index, entries = waiter.kv_get(self.key, index=index or None, wait=wait)
        except ConsulError:
            cancel.check()  # the wait was cut because we are stopping
            raise
        if entries and entries[0].session:
            return new_index if new_index >= index else 0
        cancel.wait(min(0.1, max(0.0, deadline - time.monotonic())))
        return 0

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=5)
            self._renewer = None
        session, self.session_id = self.session_id, None
        if session is None:
            return
        try:
            if self.acquired_at is not None and self.released_at is None:
                self.client.kv_put(self.key, b"", release=session)
        finally:
            self.released_at = time.time()
            with contextlib.suppress(ConsulError):  # the session expires by itself within its TTL
                self.client.session_destroy(session)

    def _start_renewing(self) -> None:
        self._stop = threading.Event()
        self.lost.clear()
        session = self.session_id
        stop = self._stop

        def renew() -> None:
            while not stop.wait(self.ttl / 2):
                try:
                    if session is None or not self.client.session_renew(session):
                        self.lost.set()
                        return
                except ConsulError:
                    self.lost.set()
                    return

        self._renewer = threading.Thread(target=renew, name=f"renew {self.key}", daemon=True)
        self._renewer.start()

    def __enter__(self) -> Lock:
        try:
            acquired = self.acquire()
        except BaseException:
            self.release()  # cancelled or failed while waiting: give the session back now, not at its TTL
            raise
        if not acquired:
            self.release()
            raise LockTimeout(f"could not acquire the lock {self.key!r} within {self.timeout:g}s (held by another)")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
