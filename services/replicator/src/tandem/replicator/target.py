"""The target side of one node (a Passive): journal consumer, receive queue, applier,
manifest server for verify & synchronize; status published as events."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from tandem.events.bus import Bus
from tandem.events.catalog import (
    AlertCleared,
    AlertRaised,
    ReplicaRejectedBatch,
    ReplicationStarted,
    ReplicationStateChanged,
)
from tandem.events.catalog.alerts import AlertClearedPayload, AlertRaisedPayload
from tandem.events.catalog.replication import (
    ReplicaRejectedBatchPayload,
    ReplicationStartedPayload,
    ReplicationStateChangedPayload,
)
from tandem.events.catalog.vocabulary import ReplicaState, Severity
from tandem.events.envelope import Event
from tandem.replicator.apply import BatchApplier
from tandem.replicator.applyloop import ApplyLoop
from tandem.replicator.receivequeue import ReceiveQueue
from tandem.replicator.receiver import JournalReceiver
from tandem.replicator.settings import ReplicatorSettings
from tandem.replicator.syncmode import announce_stored
from tandem.replicator.syncproto import ManifestServer

log = logging.getLogger(__name__)

#: In the state dir: this node's replica is known to match its source — written when a
#: verify succeeds and when a source stops cleanly (all it journaled is drained); removed
#: when it falls out of sync and when the node starts as a source (if that source dies, the
#: next one may not have all it wrote). A target started without it reports out of sync.
VERIFIED_MARK = "replica-verified"


class TargetSide:
    def __init__(
        self,
        settings: ReplicatorSettings,
        bus: Bus,
        epoch: Callable[[], int],
        emit: Callable[[Event], None],
    ) -> None:
        assert settings.protected_root is not None
        self.s = settings
        self.bus = bus
        self.epoch = epoch
        self.emit = emit
        state = settings.state
        self.applier = BatchApplier(settings.protected_root, state / "apply")
        self.queue = ReceiveQueue(state / "receive-queue")
        self.loop = ApplyLoop(
            self.queue,
            self.applier,
            report_state=self._report_state,
            raise_alert=self._alert,
            clear_alert=self._clear,
            gap_timeout_s=settings.gap_timeout_s,
        )
        self.receiver = JournalReceiver(
            bus,
            settings.cluster,
            settings.node,
            self.queue,
            current_epoch=epoch,
            applied_upto=self.loop.applied_upto,
            on_stored=self._stored,
            report_refusal=self._refused,
            on_ready=self._ready,
        )
        self.loop.on_verified = self._verified
        stale = self.queue.drop_upto(*self.loop.applied_upto())
        if stale:
            log.info("receive queue: %d batches applied before the restart dropped", stale)
        self.manifests = ManifestServer(
            bus,
            settings.cluster,
            settings.node,
            settings.protected_root,
            wait_applied=self.loop.wait_applied,
            on_begin=self.loop.begin_resync,
            on_end=self.loop.end_resync,
        )

    async def run(self) -> None:
        await self.manifests.start()
        try:
            if not await asyncio.to_thread((self.s.state / VERIFIED_MARK).exists):
                await self.loop.mark_unverified(
                    f"{self.s.node}'s replica is not known to match its source (a new target, "
                    "or its node was a source that did not stop cleanly, or was killed while "
                    "being verified): verify & synchronize it before it may take over"
                )
            else:
                # Said at every start: what was reported before the restart (syncing, a gap)
                # is the old process's, and would otherwise stand in the views.
                epoch, seq = self.loop.applied_upto()
                await self._report_state(
                    ReplicaState.IN_SYNC,
                    f"target started: verified before, applies the journal on from {epoch}:{seq}",
                )
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self.receiver.run())
                tasks.create_task(self.loop.run())
                tasks.create_task(self._ask_for_verify())
        finally:
            await self.loop.disk_alert_ended(f"the target side of {self.s.node} ended")
            await self.manifests.stop()
            self.applier.close()
            self.queue.close()

    def depths(self) -> dict[str, float]:
        batches, size = self.queue.depth()
        epoch, seq = self.loop.applied_upto()
        return {
            "receive_queue_batches": batches,
            "receive_queue_bytes": size,
            "receive_queue_oldest_age_s": self.queue.oldest_age_s(),
            "applied_epoch": epoch,
            "applied_seq": seq,
        }

    async def _verified(self, ok: bool) -> None:
        """A verify confirmed the replica (the mark survives restarts), or it fell out."""
        mark = self.s.state / VERIFIED_MARK
        if ok:
            await asyncio.to_thread(mark.touch)
        else:
            await asyncio.to_thread(mark.unlink, True)

    async def _ask_for_verify(self, every_s: float = 15.0) -> None:
        """While unverified, say so again now and then: a source that started after the
        first report (and had no verify of its own to run) learns of it and verifies."""
        while True:
            await asyncio.sleep(every_s)
            if self.loop.unverified and self.loop.state is ReplicaState.OUT_OF_SYNC:
                await self._report_state(self.loop.state, "still not verified: asking again")

    async def _ready(self) -> None:
        payload = ReplicationStartedPayload(
            side="target", root=str(self.s.protected_root), capture="-", mode=self.s.mode
        )
        await self._publish(ReplicationStarted, payload)

    async def _stored(self, epoch: int, seq: int) -> None:
        self.loop.wakeup.set()
        await announce_stored(self.bus, self.s.cluster, self.s.node, epoch, seq)

    async def _report_state(self, state: ReplicaState, reason: str) -> None:
        batches, size = self.queue.depth()
        _, applied = self.loop.applied_upto()
        payload = ReplicationStateChangedPayload(
            target=self.s.node,
            state=state,
            applied_seq=applied,
            lag_ops=batches,
            lag_bytes=size,
            reason=reason,
        )
        await self._publish(ReplicationStateChanged, payload)

    async def _alert(self, code: str, reason: str) -> None:
        payload = AlertRaisedPayload(code=code, severity=Severity.CRITICAL, message=reason)
        await self._publish(AlertRaised, payload)

    async def _clear(self, code: str, reason: str) -> None:
        await self._publish(AlertCleared, AlertClearedPayload(code=code, reason=reason))

    async def _refused(self, epoch: int, seq: int, reason: str, stale: bool) -> None:
        payload = ReplicaRejectedBatchPayload(
            batch_epoch=max(epoch, 0), seq=max(seq, 0), reason=reason, stale=stale
        )
        await self._publish(ReplicaRejectedBatch, payload)

    async def _publish(self, cls: Any, payload: Any) -> None:
        """Through the node's outbox: a bus away now never ends the side."""
        self.emit(
            cls(cluster=self.s.cluster, node=self.s.node, epoch=self.epoch(), payload=payload)
        )
