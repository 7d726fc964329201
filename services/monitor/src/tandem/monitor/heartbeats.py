"""Heartbeats of this node: core NATS ``tandem.hb.<cluster>.<node>`` every interval.

A heartbeat carries what the node's parts wrote on the shared ``NodeBoard``: the role it
plays and its epoch, the worst health status and each check's, queue depths, whether it is
isolated or fenced. Core NATS, not JetStream: a late heartbeat is worthless, and a publish
while the bus is away must not pile up (nats-py's reconnect buffer holds a few, that's all).
"""

from __future__ import annotations

import asyncio
import logging
import time

from tandem.events.bus import Bus
from tandem.events.cancel import raise_if_cancelled
from tandem.events.catalog.vocabulary import Identity
from tandem.events.heartbeat import Heartbeat
from tandem.events.nodeboard import NodeBoard
from tandem.events.subjects import heartbeat_subject

log = logging.getLogger(__name__)


def heartbeat_from(
    board: NodeBoard,
    cluster: str,
    node: str,
    identity: Identity | None,
    seq: int,
    interval_s: float,
) -> Heartbeat:
    return Heartbeat(
        cluster=cluster,
        node=node,
        identity=identity,
        role=board.role,
        epoch=board.epoch,
        health=board.health(),
        checks=dict(board.checks),
        queues=dict(board.gauges),
        isolated=board.isolated,
        fenced=board.fenced,
        fenced_reason=board.fenced_reason,
        fenced_since=board.fenced_since,
        serve_until=board.serve_until,
        seq=seq,
        interval_s=interval_s,
        sent_at=time.time(),
    )


class HeartbeatSender:
    def __init__(
        self,
        bus: Bus,
        cluster: str,
        node: str,
        identity: Identity | None,
        interval_s: float,
        board: NodeBoard,
    ) -> None:
        self.bus = bus
        self.cluster = cluster
        self.node = node
        self.identity = identity
        self.interval_s = interval_s
        self.board = board
        self.sent = 0

    async def run(self) -> None:
        subject = heartbeat_subject(self.cluster, self.node)
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            raise_if_cancelled()  # a timed wait may have swallowed a stop
            beat = heartbeat_from(
                self.board, self.cluster, self.node, self.identity, self.sent + 1, self.interval_s
            )
            try:
                await self.bus.nc.publish(subject, beat.to_bytes())
                self.sent += 1
            except Exception as exc:  # bus away: the peers' detectors will notice
                log.debug("heartbeat not sent: %s", exc)
            # Keep the rhythm (no drift), but never try to catch up missed beats at once.
            next_at = max(next_at + self.interval_s, loop.time())
            await asyncio.sleep(next_at - loop.time())
