"""Failure detection of the peers of this node, from their heartbeats.

One detector per peer (fixed timeout or phi accrual). Only transitions become events:
``HeartbeatLost`` when a peer falls silent (or was never heard from within the detector's
timeout after start), ``HeartbeatRestored`` at its next heartbeat. A heartbeat that cannot
be read goes to the dead-letter stream with its reason; watching goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from nats.aio.msg import Msg
from pydantic import ValidationError

from tandem.events.bus import Bus
from tandem.events.cancel import raise_if_cancelled
from tandem.events.catalog import HeartbeatLost, HeartbeatRestored
from tandem.events.catalog.roles import HeartbeatLostPayload, HeartbeatRestoredPayload
from tandem.events.deadletter import Rejected, dead_letter
from tandem.events.envelope import Event
from tandem.events.heartbeat import Heartbeat, listening
from tandem.events.subjects import heartbeats_filter
from tandem.monitor.detector import DetectorConfig, FailureDetector, make_detector

log = logging.getLogger(__name__)


@dataclass
class Peer:
    name: str
    detector: FailureDetector
    lost: bool = False
    lost_at: float | None = None
    latest: Heartbeat | None = None
    last_wall: datetime | None = None


class PeerWatch:
    def __init__(
        self,
        bus: Bus,
        cluster: str,
        node: str,
        peers: list[str],
        interval_s: float,
        detector: DetectorConfig,
        emit: Callable[[Event], None],
        *,
        clock: Callable[[], float] | None = None,
        startup_grace_s: float = 5.0,
    ) -> None:
        self.bus = bus
        self.cluster = cluster
        self.node = node
        self.interval_s = interval_s
        self.config = detector
        self.emit = emit
        self.clock = clock or asyncio.get_running_loop().time
        self.peers: dict[str, Peer] = {p: self._new_peer(p) for p in peers}
        self.started = self.clock()
        #: Silence after start before a peer never heard from is reported lost: at least
        #: ``startup_grace_s``, as peers started together come up at different speeds.
        self.grace_s = max(interval_s * detector.timeout_intervals, startup_grace_s)

    def _new_peer(self, name: str) -> Peer:
        return Peer(name, make_detector(self.config, self.interval_s))

    async def run(self) -> None:
        async with listening(self.bus, heartbeats_filter(self.cluster), self._on_heartbeat):
            while True:
                raise_if_cancelled()  # a timed wait may have swallowed a stop
                self.check(self.clock())
                await asyncio.sleep(self.interval_s / 2)

    async def _on_heartbeat(self, msg: Msg) -> None:
        try:
            beat = Heartbeat.model_validate_json(msg.data)
        except ValidationError as exc:
            reason = f"unreadable heartbeat: {exc.errors()[0]['msg'] if exc.errors() else exc}"
            log.warning("%s on %s", reason, msg.subject)
            try:
                await dead_letter(
                    self.bus,
                    Rejected(
                        consumer=f"heartbeats-{self.cluster}-{self.node}",
                        reason=reason,
                        subject=msg.subject,
                        data=msg.data,
                        original_headers=msg.headers,
                    ),
                )
            except Exception:
                log.debug("could not dead-letter a heartbeat", exc_info=True)
            return
        if beat.node == self.node or beat.cluster != self.cluster:
            return
        self.heard(beat, self.clock())

    def heard(self, beat: Heartbeat, now: float) -> None:
        peer = self.peers.get(beat.node)
        if peer is None:  # a node not in the config joined: watch it too
            peer = self.peers[beat.node] = self._new_peer(beat.node)
            log.info("%s: now watching %s (heard its heartbeat)", self.node, beat.node)
        peer.detector.heartbeat(now)
        peer.latest = beat
        peer.last_wall = datetime.now(UTC)
        if peer.lost:
            silent = now - peer.lost_at if peer.lost_at is not None else 0.0
            peer.lost = False
            self.emit(
                HeartbeatRestored(
                    cluster=self.cluster,
                    node=self.node,
                    payload=HeartbeatRestoredPayload(
                        peer=peer.name,
                        silent_for_s=max(silent, 0.0),
                        reason=f"heartbeat {beat.seq} from {peer.name} arrived "
                        f"({beat.role or 'no role'}, epoch {beat.epoch}, health {beat.health})",
                    ),
                )
            )

    def check(self, now: float) -> list[str]:
        """Report peers that fell silent; returns their names (for tests and logs)."""
        newly_lost = []
        for peer in self.peers.values():
            if peer.lost:
                continue
            if peer.detector.last_seen is None:
                if now - self.started < self.grace_s:
                    continue
                reason = (
                    f"never heard from {peer.name} in {now - self.started:.2f}s since start "
                    f"(timeout {self.grace_s:.2f}s)"
                )
            elif peer.detector.suspect(now):
                reason = peer.detector.explain(now)
            else:
                continue
            peer.lost, peer.lost_at = True, now
            newly_lost.append(peer.name)
            log.warning("%s: heartbeat of %s lost: %s", self.node, peer.name, reason)
            self.emit(
                HeartbeatLost(
                    cluster=self.cluster,
                    node=self.node,
                    payload=HeartbeatLostPayload(
                        peer=peer.name, last_seen_at=peer.last_wall, reason=reason
                    ),
                )
            )
        return newly_lost
