"""The node's liveness lease in ``tandem_leases`` and self-fencing.

The agent renews ``node.<cluster>.<node>`` every ``renew_every_s``. A node playing Active
that has not renewed for ``ttl_s - fence_margin_s`` hides itself (``fence``: withdraw the
public identity, stop the applications) before its lease can run out, so a failover never
meets an old Active still serving. Time is the local monotonic clock from the start of the
last successful renewal: a renewal that was slow to be acknowledged counts from when it was
sent, never later. After a freeze (SIGSTOP, a VM pause) the first thing the keeper does when
it runs again is this check, before it renews. What it did is recorded (``NodeSelfFenced``)
through the outbox, so it reaches the record as soon as the bus is back.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field

from tandem.events.bus import Bus
from tandem.events.catalog import NodeSelfFenced
from tandem.events.catalog.roles import NodeSelfFencedPayload
from tandem.events.catalog.vocabulary import Role
from tandem.events.envelope import Event
from tandem.events.nodeboard import NodeBoard
from tandem.events.subjects import LEASES_BUCKET, node_lease_key

log = logging.getLogger(__name__)

Fence = Callable[[str], Awaitable[list[str]]]


class LeaseRecord(BaseModel):
    """The value of a node lease; readers judge expiry by their own clock from the revision."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    node: str
    ttl_s: float = Field(gt=0)
    renewed_at: float  # sender's wall clock, for people
    role: Role | None = None
    epoch: int = 0
    fenced: bool = False
    #: The node's failover settings, for the orchestrator (from the node config).
    failover_timeout_s: float | None = None
    failover_mode: str | None = None


class LeaseKeeper:
    def __init__(
        self,
        bus: Bus,
        cluster: str,
        node: str,
        *,
        ttl_s: float,
        renew_every_s: float,
        fence_margin_s: float,
        board: NodeBoard,
        fence: Fence,
        emit: Callable[[Event], None],
        clock: Callable[[], float] = time.monotonic,
        failover_timeout_s: float | None = None,
        failover_mode: str | None = None,
    ) -> None:
        self.bus = bus
        self.cluster = cluster
        self.node = node
        self.ttl_s = ttl_s
        self.renew_every_s = renew_every_s
        self.fence_margin_s = fence_margin_s
        self.board = board
        self.fence = fence
        self.emit = emit
        self.clock = clock
        self.failover_timeout_s = failover_timeout_s
        self.failover_mode = failover_mode
        self.last_renewed: float | None = None
        self.renewals = 0

    @property
    def fence_after_s(self) -> float:
        return self.ttl_s - self.fence_margin_s

    def must_fence(self, now: float) -> str:
        """The reason to fence now, or '' when there is none."""
        if self.board.role is not Role.ACTIVE or self.board.fenced:
            return ""
        if self.last_renewed is None:
            return ""  # never held a lease in this run: nothing to lose yet
        silent = now - self.last_renewed
        if silent < self.fence_after_s:
            return ""
        return (
            f"lease not renewed for {silent:.1f}s (lease {self.ttl_s:g}s, hide after "
            f"{self.fence_after_s:g}s): hiding before it runs out"
        )

    async def run(self) -> None:
        key = node_lease_key(self.cluster, self.node)
        while True:
            reason = self.must_fence(self.clock())
            if reason:
                await self._fence(reason)
            started = self.clock()
            try:
                kv = await asyncio.wait_for(self.bus.kv(LEASES_BUCKET), self.renew_every_s)
                record = LeaseRecord(
                    node=self.node,
                    ttl_s=self.ttl_s,
                    renewed_at=time.time(),
                    role=self.board.role,
                    epoch=self.board.epoch,
                    fenced=self.board.fenced,
                    failover_timeout_s=self.failover_timeout_s,
                    failover_mode=self.failover_mode,
                )
                await asyncio.wait_for(
                    kv.put(key, record.model_dump_json().encode()), self.renew_every_s
                )
                # Judge by the start of the put: the lease may have been renewed any time after.
                if self.must_fence(self.clock()) == "":
                    self.last_renewed = started
                self.renewals += 1
            except (TimeoutError, Exception) as exc:
                log.warning("%s: lease not renewed: %s", self.node, exc or type(exc).__name__)
            await asyncio.sleep(max(0.0, self.renew_every_s - (self.clock() - started)))

    async def _fence(self, reason: str) -> None:
        log.error("%s fences itself: %s", self.node, reason)
        fenced_at = datetime.now(UTC)
        self.board.fenced = True
        try:
            actions = await self.fence(reason)
        except Exception as exc:  # keep what was done; say what failed
            log.exception("fencing did not complete")
            actions = [f"fencing failed: {type(exc).__name__}: {exc}"]
        self.emit(
            NodeSelfFenced(
                cluster=self.cluster,
                node=self.node,
                epoch=self.board.epoch,
                payload=NodeSelfFencedPayload(reason=reason, actions=actions, fenced_at=fenced_at),
            )
        )
