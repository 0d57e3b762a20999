"""Everything ``run`` watches in Consul for the manifests in force, started and stopped together.

The drift watch (this agent's services, the KV roots), the dependency watch, and the TTL heartbeats. Watches start
before the runner converges or resolves and it waits for their starting index, so that a change made meanwhile is
seen rather than lost; heartbeats start after converging (a heartbeat updates a check that must exist).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from manifest_runner.consul.blocking import BlockingLoop, wait_ready
from manifest_runner.consul.client import ConsulClient
from manifest_runner.consul.heartbeat import TtlHeartbeat
from manifest_runner.consul.watchpool import WatchPool, connections_for
from manifest_runner.converge.state import DesiredState
from manifest_runner.errors import ConsulError
from manifest_runner.manifest.loader import ManifestSet
from manifest_runner.run.dependencies import DependencyWatch, Watched, dependency_keys
from manifest_runner.run.drift import DriftWatch
from manifest_runner.run.probes import beats_for

log = logging.getLogger("consul_manifest.run")


def watch_failed(name: str, err: BaseException) -> None:
    log.warning("watch %s: %s", name, err)


class Watches:
    def __init__(
        self,
        client: ConsulClient | None,
        *,
        drift: DriftWatch | None,
        on_dependencies: Callable[[set[str]], None],
        on_beat: Callable[[str, str, str], None],
        on_check_lost: Callable[[str], None],
    ) -> None:
        self.client = client
        self.drift = drift
        self.on_dependencies = on_dependencies
        self.on_beat = on_beat
        self.on_check_lost = on_check_lost
        self.dependencies: DependencyWatch | None = None
        self.beats: list[TtlHeartbeat] = []
        self.pool: WatchPool | None = None
        self.extra: dict[str, Watched] = {}
        """Watches besides the manifests' dependencies: what the templates read."""
        self.manifests: ManifestSet | None = None

    def _pool(self, client: ConsulClient) -> WatchPool:
        """The dependencies' connections, sized once from the agent's per-client limit."""
        if self.pool is None:
            try:
                limit = client.agent_self().max_conns_per_client
            except ConsulError:
                limit = None  # an ACL token without agent:read, say: Consul's default limit is assumed
            size = connections_for(limit if limit is not None else 200, client.settings.watch_connections)
            self.pool = WatchPool(client, connections=size, on_error=watch_failed)
        return self.pool

    def start(self, manifests: ManifestSet, desired: Iterable[DesiredState]) -> None:
        """Stop what was watched, watch these manifests, and wait (briefly) for every starting index."""
        self.stop()
        loops: list[BlockingLoop] = self.drift.start(desired) if self.drift is not None else []
        self.manifests = manifests
        watched = {**dependency_keys(manifests), **self.extra}
        if watched and self.client is not None:
            self.dependencies = DependencyWatch(self._pool(self.client), watched, self.on_dependencies).start()
        ready = wait_ready(loops) and (self.dependencies is None or self.dependencies.wait_ready())
        if not ready:
            log.warning("some watches have no starting index yet; the resync will catch what they miss")

    def set_extra(self, extra: dict[str, Watched]) -> None:
        """Watch what the templates read now (restarting the dependency watch when that changed).

        The new watches' starting indexes are read after the render whose reads they come from: a change made in
        between is in their starting state and would never wake them. So each one reports its first answer: what
        it covers is resolved and rendered again, once, and written (its command run) only if that changed
        anything."""
        if extra == self.extra or self.manifests is None:
            return
        self.extra = dict(extra)
        if self.client is None:
            return
        if self.dependencies is not None:
            self.dependencies.stop()
            self.dependencies = None
        watched = {**dependency_keys(self.manifests), **self.extra}
        if watched:
            pool = self._pool(self.client)
            self.dependencies = DependencyWatch(pool, watched, self.on_dependencies, notify_first=True).start()
            if not self.dependencies.wait_ready():
                log.warning("some watches have no starting index yet; they will report their first answer")

    def start_heartbeats(self, desired: Iterable[DesiredState]) -> None:
        if self.client is None:
            return
        checks = [check for d in desired for s in d.services if not s.node for check in s.checks]
        self.beats = [b.start() for b in beats_for(self.client, checks, self.on_beat, self.on_check_lost)]

    def stop(self) -> None:
        if self.drift is not None:
            self.drift.stop()
        if self.dependencies is not None:
            self.dependencies.stop()
            self.dependencies = None
        for beat in self.beats:
            beat.stop()
        self.beats = []

    def close(self) -> None:
        """Stop everything, the connections of the dependency watches included."""
        self.stop()
        if self.pool is not None:
            self.pool.stop()
            self.pool = None

    @property
    def wakeups(self) -> int:
        drift = self.drift.wakeups if self.drift is not None else 0
        return drift + (self.dependencies.wakeups if self.dependencies is not None else 0)
