"""The source side of one node (the Active): capture -> send queue -> journal, and verify &
synchronize of the replicas on request (command ``VerifyReplica``) or after an unclean stop."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from nats.aio.msg import Msg
from nats.js.errors import NotFoundError

from tandem.events.bus import Bus
from tandem.events.catalog import (
    AlertRaised,
    ReplicationStarted,
    ReplicationStateChanged,
    SyncCompleted,
    SyncProgress,
    SyncStarted,
    VerifyReplica,
)
from tandem.events.catalog.alerts import AlertRaisedPayload
from tandem.events.catalog.replication import (
    ReplicationStartedPayload,
    SyncCompletedPayload,
    SyncProgressPayload,
    SyncStartedPayload,
)
from tandem.events.catalog.vocabulary import ReplicaState, Severity
from tandem.events.envelope import Command, CommandResult, Event
from tandem.events.errors import DecodeError
from tandem.events.registry import decode_event
from tandem.events.rpc import CommandServer
from tandem.events.subjects import JOURNAL_STREAM, events_filter, journal_subject
from tandem.events.transient import describe, is_transient, retry_transient
from tandem.replicator.batch import H_EPOCH, H_SEQ
from tandem.replicator.capture import Capture, OpSink
from tandem.replicator.codec import codec_named
from tandem.replicator.manifest import Entry, SyncStats
from tandem.replicator.publisher import JournalPublisher
from tandem.replicator.sendqueue import SendQueue, SendQueueLimits
from tandem.replicator.settings import ReplicatorSettings
from tandem.replicator.syncmode import SyncSink, SyncWaiter, direct_subject
from tandem.replicator.syncproto import TargetNotServingError, fetch_manifest, tell_end
from tandem.replicator.target import VERIFIED_MARK
from tandem.replicator.verify import Throttle, VerifyResult, verify_and_sync

log = logging.getLogger(__name__)

CLEAN_MARK = "source-stopped-cleanly"
#: How long a verify the source starts by itself waits for the replica's manifest (one asked
#: for by an operator waits longer): a target whose side restarted never answers.
AUTO_VERIFY_WAIT_S = 30.0
#: How long a verify asked for before the capture is live waits for it (the capture waits
#: for the bus and the folder; one that cannot start raises its own alert).
CAPTURE_WAIT_S = 120.0
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


class SourceSide:
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
        self._background: set[asyncio.Task[VerifyResult]] = set()
        #: Set once capture runs and the journal publisher exists (steps may then use them).
        self.ready = asyncio.Event()
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

    async def _on_replica_state(self, msg: Msg) -> None:
        """A Passive that fell out of sync (a gap the stream cannot fill) gets verified."""
        try:
            event = decode_event(msg.data)
        except DecodeError:
            return  # the durable consumers dead-letter it; this is only a trigger
        if (
            isinstance(event, ReplicationStateChanged)
            and event.payload.state is ReplicaState.OUT_OF_SYNC
            and event.payload.target in self.s.peers
        ):
            reason = f"{event.payload.target} is out of sync: {event.payload.reason}"
            # Bounded like the start-time verify: a target whose side restarted meanwhile
            # never answers this fetch, and the next verify (its new report) waits behind it.
            verify = self.verify(event.payload.target, reason, fetch_timeout=AUTO_VERIFY_WAIT_S)
            task = asyncio.get_running_loop().create_task(verify)
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def exclusive(self) -> AbstractContextManager[object]:
        factory: Callable[[], AbstractContextManager[object]] | None = getattr(
            self.capture, "exclusive", None
        )
        return factory() if factory is not None else contextlib.nullcontext()

    async def _on_command(self, command: Command) -> CommandResult:
        assert isinstance(command, VerifyReplica)
        targets = [command.payload.target] if command.payload.target else self.s.peers
        if not targets:
            return CommandResult(
                command_id=command.id,
                idempotency_key=command.idempotency_key,
                ok=False,
                reason="no target: set peers or name one",
            )
        results = [
            await self.verify(t, command.payload.reason, command.payload.max_passes)
            for t in targets
        ]
        ok = all(r.ok for r in results)
        return CommandResult(
            command_id=command.id,
            idempotency_key=command.idempotency_key,
            ok=ok,
            reason="; ".join(f"{t}: {r.reason}" for t, r in zip(targets, results, strict=True)),
            data={t: r.__dict__ for t, r in zip(targets, results, strict=True)},
        )

    async def verify_all(
        self, reason: str, pause_s: float = 5.0, max_pause_s: float = 60.0
    ) -> None:
        """Verify every peer, trying again (less and less often) until it succeeds: until
        then the orchestrator holds the peer unverified and moves no role onto it."""
        for target in self.s.peers:
            attempt, pause = 0, pause_s
            while True:
                attempt += 1
                result = await self.verify(target, reason, fetch_timeout=AUTO_VERIFY_WAIT_S)
                if result.ok:
                    break
                log.warning(
                    "verify of %s (attempt %d) failed: %s; again in %.0fs",
                    target, attempt, result.reason, pause,
                )  # fmt: skip
                await asyncio.sleep(pause)
                pause = min(pause * 2, max_pause_s)

    async def verify(
        self, target: str, reason: str, max_passes: int = 3, fetch_timeout: float = 120.0
    ) -> VerifyResult:
        # Only a verify made while the capture is live counts: what is written after its
        # pass and before the capture would be on neither the journal nor the replica.
        try:
            await asyncio.wait_for(self.ready.wait(), CAPTURE_WAIT_S)
        except TimeoutError:
            why = f"the capture is not live after {CAPTURE_WAIT_S:.0f}s: verify later"
            return VerifyResult(False, 0, 0, 0, 0, why)
        async with self._verifying:
            return await self._verify(target, reason, max_passes, fetch_timeout)

    async def _verify(
        self, target: str, reason: str, max_passes: int, fetch_timeout: float
    ) -> VerifyResult:
        s = self.s
        log.info("verify of %s started: %s", target, reason)
        await self._publish(SyncStarted, SyncStartedPayload(target=target, reason=reason))
        throttle = Throttle(1.0)

        def progress(stats: SyncStats, total: int) -> None:
            if throttle.ready():
                payload = SyncProgressPayload(
                    target=target,
                    files_checked=stats.checked,
                    files_total=total,
                    bytes_sent=stats.bytes_sent,
                )
                self._from_thread(self._publish(SyncProgress, payload))

        async def fetch() -> dict[str, Entry]:
            upto = (self.epoch, self.queue.last_sealed_seq)
            return await fetch_manifest(self.bus, s.cluster, target, upto, timeout=fetch_timeout)

        async def settle() -> None:
            await self.publisher.drain(timeout=120)

        try:
            result = await verify_and_sync(
                self.capture.read_root(),
                fetch_replica=fetch,
                submit=self.queue.submit,
                settle=settle,
                exclusive=self.exclusive,
                max_passes=max_passes,
                on_progress=progress,
                exact_fixes=getattr(self.capture, "exclusive", None) is not None,
            )
        except TargetNotServingError as exc:  # not up yet: expected, said without a trace
            log.warning("verify of %s not done yet: %s", target, exc)
            result = VerifyResult(False, 0, 0, 0, 0, f"{type(exc).__name__}: {exc}")
        except Exception as exc:
            if is_transient(exc):  # the bus electing a leader, a reconnect: tried again
                log.warning("verify of %s interrupted: %s", target, describe(exc))
            else:
                log.exception("verify of %s failed", target)
            result = VerifyResult(False, 0, 0, 0, 0, f"{type(exc).__name__}: {exc}")
        with contextlib.suppress(Exception):
            await tell_end(
                self.bus, s.cluster, target, result.ok, f"verify & synchronize: {result.reason}"
            )
        await self._publish(
            SyncCompleted,
            SyncCompletedPayload(
                target=target,
                files_checked=result.files_checked,
                files_out_of_sync=result.files_out_of_sync,
                bytes_sent=result.bytes_sent,
                ok=result.ok,
                reason=result.reason,
            ),
        )
        if result.ok:
            log.info("verify of %s done: %s", target, result.reason)
        return result

    async def _publish(self, cls: Any, payload: Any) -> None:
        """Through the node's outbox: a bus away now never ends the side."""
        self.emit(cls(cluster=self.s.cluster, node=self.s.node, epoch=self.epoch, payload=payload))

    async def _alert(self, code: str, reason: str) -> None:
        await self._publish(
            AlertRaised, AlertRaisedPayload(code=code, severity=Severity.CRITICAL, message=reason)
        )

    def _from_thread(self, coro: Any) -> None:
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(coro, self._loop)


def _say_drain_outcome(task: asyncio.Task[None]) -> None:
    if task.cancelled():
        log.warning("the send queue's drain at stop was cancelled")
    elif (exc := task.exception()) is not None:
        log.warning("the send queue was not drained at stop: %s", exc)
