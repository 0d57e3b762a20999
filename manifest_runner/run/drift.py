"""The drift watch: blocking queries on this agent's services and on the manifests' KV roots.

Any change there may be drift (someone deregistered a service, edited an ``enforce`` key, deleted a ``seed`` key):
the loop converges again. A dev agent that restarts empty makes those indexes go backwards, which the loops report
as a change, so every service and key is put back. The agent's node name is remembered: a different one at a
resync means the agent was replaced, and the watches restart on the new node.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from manifest_runner.consul.blocking import BlockingLoop, kv_keys_fetch, node_services_fetch
from manifest_runner.consul.client import ConsulClient
from manifest_runner.converge.state import DesiredState, kv_roots
from manifest_runner.errors import ConsulError

log = logging.getLogger("consul_manifest.run")


class DriftWatch:
    def __init__(
        self, client: ConsulClient, on_drift: Callable[[], None], on_error: Callable[[str, BaseException], None]
    ) -> None:
        self.client = client
        self.on_drift = on_drift
        self.on_error = on_error
        self.node: str | None = None
        self.loops: list[BlockingLoop] = []

    def start(self, desired: Iterable[DesiredState]) -> list[BlockingLoop]:
        """Start the loops for these owners (stop the previous ones first); returns them."""
        self.stop()

        def wake(_body: object) -> None:
            self.on_drift()

        self.node = self.read_node() or self.node
        if self.node is not None:
            self.loops.append(
                BlockingLoop(
                    f"services of {self.node}", self.client, node_services_fetch(self.node), wake, self.on_error
                )
            )
        for root in kv_roots(e.key for d in desired for e in d.kv):
            self.loops.append(BlockingLoop(f"kv {root}", self.client, kv_keys_fetch(root, None), wake, self.on_error))
        for loop in self.loops:
            loop.start()
        return self.loops

    def stop(self) -> None:
        for loop in self.loops:
            loop.interrupt()
        for loop in self.loops:
            loop.stop()
        self.loops = []

    def read_node(self) -> str | None:
        """The agent's node name (for the services watch), or None when the agent cannot say."""
        try:
            return self.client.agent_self().node_name or None
        except ConsulError:
            return None

    def node_replaced(self) -> bool:
        """Whether the agent now has another node name (the agent was replaced)."""
        node = self.read_node()
        if node is not None and self.node is not None and node != self.node:
            log.info("the agent's node is now %s (was %s)", node, self.node)
            return True
        return False

    @property
    def wakeups(self) -> int:
        return sum(loop.wakeups for loop in self.loops)
