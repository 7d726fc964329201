"""Network protection: the node's network check rounds, as events and decisions.

Every change of reachability is a ``NetworkReachabilityChanged`` event. When every target
fails the node is cut off: ``NetworkIsolated``; on the Active that is also an automatic
``SwitchoverRequested`` (the Passive, which still reaches the network, should serve). On a
Passive, ``isolated`` on its heartbeat and in the record vetoes its becoming Active.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from tandem.events.cancel import raise_if_cancelled
from tandem.events.catalog import (
    NetworkIsolated,
    NetworkReachabilityChanged,
    SwitchoverRequested,
)
from tandem.events.catalog.health import (
    NetworkIsolatedPayload,
    NetworkReachabilityChangedPayload,
)
from tandem.events.catalog.operations import SwitchoverRequestedPayload
from tandem.events.catalog.vocabulary import Role
from tandem.events.envelope import Event
from tandem.events.nodeboard import NodeBoard
from tandem.monitor.network import NetworkConfig, NetworkVerdict, NetworkWatch

log = logging.getLogger(__name__)


class NetworkLoop:
    def __init__(
        self,
        cluster: str,
        node: str,
        config: NetworkConfig,
        board: NodeBoard,
        emit: Callable[[Event], None],
        *,
        watch: NetworkWatch | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cluster = cluster
        self.node = node
        self.config = config
        self.board = board
        self.emit = emit
        self.watch = watch or NetworkWatch(config)
        self.clock = clock
        self._asked = False

    async def run(self) -> None:
        if not self.config.targets:
            await asyncio.Event().wait()
        while True:
            raise_if_cancelled()  # a timed wait may have swallowed a stop
            started = self.clock()
            self.observe(await self.watch.round(started))
            await asyncio.sleep(max(0.0, self.config.interval_s - (self.clock() - started)))

    def observe(self, verdict: NetworkVerdict) -> None:
        was_isolated = self.board.isolated
        self.board.isolated = verdict.isolated
        if not verdict.isolated:
            self._asked = False
        if verdict.changed:
            log.log(
                logging.WARNING if verdict.unreachable else logging.INFO,
                "%s network: %s",
                self.node,
                verdict.reason,
            )
            self._event(
                NetworkReachabilityChanged,
                NetworkReachabilityChangedPayload(
                    reachable=list(verdict.reachable),
                    unreachable=list(verdict.unreachable),
                    isolated=verdict.isolated,
                    reason=verdict.reason,
                ),
            )
        if verdict.isolated and not was_isolated:
            self._event(
                NetworkIsolated,
                NetworkIsolatedPayload(
                    unreachable=list(verdict.unreachable), reason=verdict.reason
                ),
            )
        # Once per isolation, as soon as the node plays Active (it may become Active later
        # than it became isolated, e.g. at start).
        if verdict.isolated and self.board.role is Role.ACTIVE and not self._asked:
            self._asked = True
            self._event(
                SwitchoverRequested,
                SwitchoverRequestedPayload(
                    to=None,
                    requested_by=f"network checks on {self.node}",
                    reason=f"the Active is cut off from its network: {verdict.reason}",
                    automatic=True,
                ),
            )

    def _event(self, cls: Any, payload: Any) -> None:
        self.emit(
            cls(cluster=self.cluster, node=self.node, epoch=self.board.epoch, payload=payload)
        )
