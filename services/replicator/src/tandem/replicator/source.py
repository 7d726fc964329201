"""The source side of one node (the Active): capture -> send queue -> journal, and verify &
synchronize of the replicas on request (command ``VerifyReplica``) or after an unclean stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nats.js.errors import NotFoundError

from tandem.events.bus import Bus
from tandem.events.catalog import (
    AlertCleared,
    AlertRaised,
    ReplicationStarted,
)
from tandem.events.catalog.alerts import AlertClearedPayload, AlertRaisedPayload
from tandem.events.catalog.replication import (
    ReplicationStartedPayload,
)
from tandem.events.catalog.vocabulary import Severity
from tandem.events.envelope import Event
from tandem.events.rpc import CommandServer
from tandem.events.subjects import JOURNAL_STREAM, events_filter, journal_subject
from tandem.events.transient import retry_transient
from tandem.replicator.batch import H_EPOCH, H_SEQ
from tandem.replicator.capture import Capture, OpSink
from tandem.replicator.codec import codec_named
from tandem.replicator.publisher import JournalPublisher
from tandem.replicator.sendqueue import SendQueue, SendQueueLimits
from tandem.replicator.settings import ReplicatorSettings
from tandem.replicator.source_verify import SourceVerifying
from tandem.replicator.syncmode import SyncSink, SyncWaiter, direct_subject
from tandem.replicator.target import VERIFIED_MARK
from tandem.replicator.verify import VerifyResult

log = logging.getLogger(__name__)

CLEAN_MARK = "source-stopped-cleanly"
#: The last epoch this node was the source at: after a restart, the journal's newest batches
#: of that epoch are its own writes, not something to apply (see ``node.py``).
SOURCE_EPOCH_FILE = "source-epoch"


def last_source_epoch(state: Path) -> int:
    try:
        return int((state / SOURCE_EPOCH_FILE).read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


async def last_stored_seq(bus: Bus, cluster: str, epoch: int) -> int:
    """The highest batch sequence of ``epoch`` already in the journal (0 if none), so that a
    restarted source goes on numbering instead of reusing ids the stream would drop."""
    try:
        msg = await bus.js.get_last_msg(JOURNAL_STREAM, journal_subject(cluster))
    except NotFoundError:
        return 0
    h = msg.headers or {}
    return int(h.get(H_SEQ, 0)) if int(h.get(H_EPOCH, -1)) == epoch else 0


class CaptureFailed(Exception):
    """The capture of the protected folder could not start (FUSE refused, the folder
    unusable): nothing the applications write would be replicated, so they must not run."""


def make_capture(settings: ReplicatorSettings, sink: OpSink) -> Capture:
    assert settings.protected_root is not None
    if settings.capture == "intercept":
        from tandem.replicator.intercept import InterceptCapture

        return InterceptCapture(
            settings.protected_root, sink, settings.mountpoint, allow_other=settings.allow_other
        )
    from tandem.replicator.watch import WatchCapture

    return WatchCapture(settings.protected_root, sink)


class SourceSide(SourceVerifying):
    def __init__(
        self, settings: ReplicatorSettings, bus: Bus, epoch: int, emit: Callable[[Event], None]
    ) -> None:
        assert settings.protected_root is not None
        self.s = settings
        self.bus = bus
        self.epoch = epoch
        self.emit = emit
        self.root = settings.protected_root
        self._loop: asyncio.AbstractEventLoop | None = None
        self._verifying = asyncio.Lock()  # one verify at a time: passes must not interleave
        #: Per target, when (monotonic) the replica manifest of its last verify that ended
        #: ok was first asked for: a report older than that is answered already.
        self._matched_from: dict[str, float] = {}
        self._background: set[asyncio.Task[VerifyResult]] = set()
        #: Set once capture runs and the journal publisher exists (steps may then use them).
        self.ready = asyncio.Event()
        #: The codes this side raised and has not cleared yet.
        self._alerted: set[str] = set()
        #: Why the targets are not known to match (this source did not stop cleanly), or ''.
        self._unclean = ""

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        s = self.s
        state = s.state
        state.mkdir(parents=True, exist_ok=True)
        mark = state / CLEAN_MARK
        # This node was a source that did not stop cleanly, and no verify matched it to a
        # source since: writes of that run may never have reached the journal, so its
        # targets may lack them. (A node a target until now, or one verified since, has
        # the journal's data: its targets are as they say.)
        crashed_before = (
            last_source_epoch(state) > 0
            and not mark.exists()
            and not (state / VERIFIED_MARK).exists()
        )
        await asyncio.to_thread((state / SOURCE_EPOCH_FILE).write_text, f"{self.epoch}\n")
        # From now on this node's data is the reference: should it die, the next source
        # may lack some of it, so it is no longer known to match as a replica.
        await asyncio.to_thread((state / VERIFIED_MARK).unlink, True)
        # Verify & synchronize at start unless this is an intercept source that stopped
        # cleanly: at first pairing the replica may lack anything; after a crash, batches in
        # memory were lost; watch assumes what it indexed at start is on the replica already.
        why = None
        self._unclean = ""
        if not mark.exists():
            why = "first start of this source, or it did not stop cleanly"
        if crashed_before:
            self._unclean = (
                f"{s.node} was a source that did not stop cleanly: what it wrote then may "
                "not be on its targets"
            )
        elif s.capture == "watch":
            why = "watch capture started: what changed while it was down is found by verify"
        mark.unlink(missing_ok=True)
        self.queue = SendQueue(
            epoch=self.epoch,
            codec=codec_named(s.codec),
            spill_dir=state / "spill" / str(self.epoch),
            first_seq=await retry_transient(
                "reading the journal's last batch",
                lambda: last_stored_seq(self.bus, s.cluster, self.epoch),
            )
            + 1,
            limits=SendQueueLimits(
                batch_bytes=s.batch_bytes,
                batch_age_s=s.batch_age_s,
                memory_bytes=s.memory_bytes,
                spill_quota_bytes=s.spill_quota_bytes,
            ),
            on_alert=lambda reason: self._from_thread(
                self._alert("replicator.spill_quota", reason)
            ),
            on_clear=lambda reason: self._from_thread(
                self._clear("replicator.spill_quota", reason)
            ),
        )
        direct = direct_subject(s.cluster) if s.mode == "sync" else None
        self.publisher = JournalPublisher(self.bus, s.cluster, self.queue, direct_subject=direct)
        sink: OpSink = self.queue
        if s.mode == "sync":
            waiter = SyncWaiter(self.epoch)
            await retry_transient(
                "following sync acknowledgements", lambda: waiter.follow(self.bus, s.cluster)
            )
            sink = SyncSink(
                self.queue,
                waiter,
                timeout_s=s.sync_timeout_s,
                policy=s.sync_policy,
                on_alert=lambda reason: self._from_thread(
                    self._alert("replicator.sync_degraded", reason)
                ),
                on_clear=lambda reason: self._from_thread(
                    self._clear("replicator.sync_degraded", reason)
                ),
            )
        # Every bus call that sets the side up comes before the capture: once the
        # application's writes are captured, no bus fault may end the side (its end unmounts
        # the capture, and what the application then writes would bypass replication).
        commands = CommandServer(
            self.bus,
            s.cluster,
            s.node,
            self._on_command,
            lambda: self.epoch,
            commands=["VerifyReplica"],
        )
        await retry_transient("answering VerifyReplica", commands.start)
        watcher = None
        try:
            watcher = await retry_transient(
                "following the replicas' states",
                lambda: self.bus.nc.subscribe(
                    events_filter(s.cluster, "ReplicationStateChanged"), cb=self._on_replica_state
                ),
            )
            self.capture = make_capture(s, sink)
            try:
                await asyncio.to_thread(self.capture.start)
            except Exception as exc:
                raise CaptureFailed(f"capture of {self.root} did not start: {exc}") from exc
            try:
                await self._serve(s, why)
            finally:
                await asyncio.to_thread(self.capture.stop)
                # Shielded: a stop that cancels the side still lets the drain finish; its
                # outcome is said by the task itself, even when nobody awaits it any more.
                drain = asyncio.create_task(self._drain_then_mark(mark))
                drain.add_done_callback(_say_drain_outcome)
                with contextlib.suppress(Exception):
                    await asyncio.shield(drain)
        finally:
            if watcher is not None:
                with contextlib.suppress(Exception):
                    await watcher.unsubscribe()
            await commands.stop()
            await self._clear_all(f"the source side of {s.node} at epoch {self.epoch} ended")

    async def _serve(self, s: ReplicatorSettings, why: str | None) -> None:
        """The capture is live: say so, then publish the journal (and verify) until stopped."""
        await self._publish(
            ReplicationStarted,
            ReplicationStartedPayload(
                side="source",
                root=str(self.root),
                capture=s.capture,
                mode=s.mode,
                unverified_targets=self._unclean if s.peers else "",
            ),
        )
        log.info(
            "replicating %s (%s capture, %s mode) at epoch %s",
            self.root,
            s.capture,
            s.mode,
            self.epoch,
        )
        self.ready.set()
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self.publisher.run())
            if why is not None and s.peers:
                tasks.create_task(self.verify_all(why))

    def depths(self) -> dict[str, float]:
        if not self.ready.is_set():
            return {}
        batches, size = self.queue.depth()
        return {
            "send_queue_batches": batches,
            "send_queue_bytes": size,
            "send_queue_oldest_age_s": self.queue.oldest_age_s(),
        }

    async def _drain_then_mark(self, mark: Any) -> None:
        """Publish what capture queued, then mark the stop clean (no verify at next start).
        The publisher's own task is cancelled with the source by now: it runs again here for
        the drain (without it, the drain only waited out its timeout, delaying the agent's
        stop and the applications' with it)."""
        publishing = asyncio.create_task(self.publisher.run())
        try:
            await self.publisher.drain(timeout=10)
        finally:
            publishing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await publishing
        mark.touch()
        (mark.parent / VERIFIED_MARK).touch()  # all it wrote is in the journal

    async def _publish(self, cls: Any, payload: Any) -> None:
        """Through the node's outbox: a bus away now never ends the side."""
        self.emit(cls(cluster=self.s.cluster, node=self.s.node, epoch=self.epoch, payload=payload))

    async def _alert(self, code: str, reason: str) -> None:
        self._alerted.add(code)
        await self._publish(
            AlertRaised, AlertRaisedPayload(code=code, severity=Severity.CRITICAL, message=reason)
        )

    async def _clear(self, code: str, reason: str) -> None:
        if code in self._alerted:
            self._alerted.discard(code)
            await self._publish(AlertCleared, AlertClearedPayload(code=code, reason=reason))

    async def _clear_all(self, reason: str) -> None:
        """The side ends: what it alerted about (its queue, its sync mode) ends with it."""
        for code in sorted(self._alerted):
            await self._clear(code, reason)

    def _from_thread(self, coro: Any) -> None:
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(coro, self._loop)


def _say_drain_outcome(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        log.warning("the send queue's drain at stop was cancelled")
    elif (exc := task.exception()) is not None:
        log.warning("the send queue was not drained at stop: %s", exc)
