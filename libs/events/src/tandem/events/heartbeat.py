"""The heartbeat a node agent sends on core NATS ``tandem.hb.<cluster>.<node>``.

Heartbeats are not events: they are frequent (every 250 ms by default), only the latest
matters, and losing one is what the failure detectors are for. Only their state changes
(``HeartbeatLost`` / ``HeartbeatRestored``) become events.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

from tandem.events.catalog.vocabulary import HealthStatus, Identity, Role
from tandem.events.names import ClusterName, NodeName

if TYPE_CHECKING:
    from nats.aio.msg import Msg

    from tandem.events.bus import Bus

log = logging.getLogger(__name__)

#: Every node of every cluster (a cluster's own: ``subjects.heartbeats_filter``).
HEARTBEATS_ALL = "tandem.hb.*.*"


class Heartbeat(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")  # newer senders may add fields

    cluster: ClusterName
    node: NodeName
    identity: Identity | None = None
    #: What the node really plays now (None until it knows its role).
    role: Role | None = None
    epoch: int = Field(default=0, ge=0)
    #: The worst status among the node's health checks.
    health: HealthStatus = HealthStatus.UNKNOWN
    checks: dict[str, HealthStatus] = Field(default_factory=dict)
    #: Queue depths and other gauges (send/receive queue batches and bytes, applied seq).
    queues: dict[str, float] = Field(default_factory=dict)
    isolated: bool = False
    fenced: bool = False
    fenced_reason: str = ""
    fenced_since: datetime | None = None
    #: Wall clock: the node guard hides the node then unless the lease is renewed.
    serve_until: float | None = None
    #: Counts up per heartbeat of one agent run; a restart starts again at 1.
    seq: int = Field(ge=1)
    interval_s: float = Field(gt=0)
    #: Sender's wall clock (for people); detectors use the receiver's clock.
    sent_at: float

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()


@contextlib.asynccontextmanager
async def listening(
    bus: Bus, subject: str, on_message: Callable[[Msg], Awaitable[None]]
) -> AsyncIterator[None]:
    """Heartbeats on ``subject`` go to ``on_message`` while the block runs; the subscription
    ends with it (quietly if the connection is already gone)."""
    sub = await bus.nc.subscribe(subject, cb=on_message)
    try:
        yield
    finally:
        try:
            await sub.unsubscribe()
        except Exception:
            log.debug("heartbeat subscription on %s already gone", subject)
