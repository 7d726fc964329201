"""The applier loop on a target: receive queue -> replica, strictly in sequence order.

Each cycle returns a reason (logged, and carried on state events): what it applied, or why
it waits. A missing sequence waits ``gap_timeout_s`` for the batch to arrive (it may be
re-sent), then the replica is out of sync and needs verify & synchronize. A full disk pauses
apply with an alert and retries; nothing is ever skipped.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from tandem.events.cancel import raise_if_cancelled
from tandem.events.catalog.vocabulary import ReplicaState
from tandem.replicator.apply import ApplyRefusedError, BatchApplier
from tandem.replicator.batch import Batch, BatchError
from tandem.replicator.receivequeue import ReceiveQueue

log = logging.getLogger(__name__)

StateReporter = Callable[[ReplicaState, str], Awaitable[None]]


@dataclass
class Cycle:
    applied: int
    reason: str


DISK_FULL = "replicator.disk_full"


class ApplyLoop:
    def __init__(
        self,
        queue: ReceiveQueue,
        applier: BatchApplier,
        *,
        report_state: StateReporter,
        raise_alert: Callable[[str, str], Awaitable[None]],
        clear_alert: Callable[[str, str], Awaitable[None]] | None = None,
        gap_timeout_s: float = 30.0,
        sync_every: int = 64,
    ) -> None:
        self.queue = queue
        self.applier = applier
        self.report_state = report_state
        self.raise_alert = raise_alert
        self.clear_alert = clear_alert
        #: The disk_full alert is raised (cleared once a batch applies again).
        self._disk_alerted = False
        self.gap_timeout_s = gap_timeout_s
        self.sync_every = sync_every
        self.wakeup = asyncio.Event()
        self.state = ReplicaState.IN_SYNC
        self._gap_since: float | None = None
        #: Out of sync only because a batch was missing: applying goes on if it turns up.
        self._out_for_gap = False
        self._gap_reason = ""
        self._unsynced = 0
        #: During verify & synchronize a missing batch is skipped: the verify repairs it.
        self._skip_gaps = False
        self._before_sync = ReplicaState.IN_SYNC
        #: Nothing says this replica matches its source (a new target, or one whose node was
        #: a source that did not stop cleanly): reported out of sync until a verify succeeds,
        #: while apply goes on as usual. Called with True once a verify confirmed it.
        self.unverified = False
        self.on_verified: Callable[[bool], Awaitable[None]] | None = None
        #: A verify under way made apply skip a gap or an op (set in a thread: ``next_batch``),
        #: and whether the verified mark went for it already.
        self._skipped_in_sync = False
        self._mark_withdrawn = False

    async def mark_unverified(self, reason: str) -> None:
        """Report out of sync (``reason``) until a verify succeeds; apply is not stopped."""
        self.unverified = True
        self.state = ReplicaState.OUT_OF_SYNC
        log.info("replica not verified yet: %s", reason)
        await self.report_state(self.state, reason)

    def applied_upto(self) -> tuple[int, int]:
        """(epoch, seq) of the last batch wholly applied."""
        p = self.applier.position
        if p.seq == 0:
            return p.epoch, 0  # nothing applied yet
        return (p.epoch, p.seq) if self.applier.done(p.epoch, p.seq) else (p.epoch, p.seq - 1)

    def next_batch(self) -> tuple[Batch | None, str]:
        p = self.applier.position
        if p.seq and not self.applier.done(p.epoch, p.seq):
            want = (p.epoch, p.seq)  # resume a batch cut short
        else:
            want = (p.epoch, p.seq + 1)
        batch = self.queue.get(*want)
        if batch is not None:
            return batch, ""
        pending = [k for k in self.queue.pending() if k > want]
        if not pending:
            return None, f"waiting for batch {want[0]}:{want[1]}"
        first = pending[0]
        if first[0] > want[0] and first[1] == 1:
            # A new epoch began (a role change): its first batch follows our last one.
            return self.queue.get(*first), ""
        if self._skip_gaps:
            # Verify & synchronize repairs what the missing batches did: until it has, the
            # replica is not the journal's beginning any more (``cycle`` says so).
            self._skipped_in_sync = True
            return self.queue.get(*first), ""
        return None, f"gap: batch {want[0]}:{want[1]} missing, {first[0]}:{first[1]} is here"

    async def cycle(self) -> Cycle:
        if self.state is ReplicaState.OUT_OF_SYNC and not self._out_for_gap and not self.unverified:
            return Cycle(0, "out of sync: apply is stopped until verify & synchronize")
        try:
            batch, reason = await asyncio.to_thread(self.next_batch)
        except BatchError as exc:
            await self._out_of_sync(f"a stored batch is unreadable: {exc}")
            return Cycle(0, f"out of sync: {exc}")
        if self._skipped_in_sync:
            await self._withdraw_mark()
        if batch is None:
            if self.state is ReplicaState.OUT_OF_SYNC:
                return Cycle(0, f"out of sync ({reason}): until verify & synchronize")
            return await self._waiting(reason)
        self._gap_since = None
        if self.state is ReplicaState.OUT_OF_SYNC and not self.unverified:
            # The missing batch came after all (redelivered late, e.g. after the journal's
            # leader changed): nothing was skipped, so applying simply goes on.
            self._out_for_gap = False
            self.state = ReplicaState.IN_SYNC
            log.warning("batch %s:%s arrived: in sync again", batch.epoch, batch.seq)
            await self.report_state(self.state, f"the missing batch {batch.epoch}:{batch.seq} came")
        try:
            n = await asyncio.to_thread(self.applier.apply, batch)
        except (ApplyRefusedError, OSError) as exc:
            if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                reason = f"disk full applying batch {batch.epoch}:{batch.seq}; apply paused"
                await self._pause(reason)
                return Cycle(0, reason)
            return await self._diverged(batch, exc)
        self._unsynced += 1
        if self._unsynced >= self.sync_every or self.queue.count() <= 1:
            await asyncio.to_thread(self.applier.sync)
            self._unsynced = 0
        await asyncio.to_thread(self.queue.remove, batch.epoch, batch.seq)
        if self.state is ReplicaState.PAUSED:
            self.state = ReplicaState.IN_SYNC
            await self.report_state(
                self.state, f"applying again from batch {batch.epoch}:{batch.seq}"
            )
        await self.disk_alert_ended(f"batch {batch.epoch}:{batch.seq} applied: the disk has room")
        return Cycle(n, f"applied batch {batch.epoch}:{batch.seq} ({n} ops)")

    async def _diverged(self, batch: Batch, exc: Exception) -> Cycle:
        """The replica is not what the journal expects (changed behind Tandem's back, or a
        watch capture that saw a change too late). Outside a verify: stop and ask for one.
        During a verify: step over the op; the verify's passes repair what it would have done."""
        index = getattr(exc, "op_index", 0)
        reason = f"batch {batch.epoch}:{batch.seq} op {index} cannot be applied: {exc}"
        if self.state is ReplicaState.SYNCING:
            log.warning("%s; skipped, verify & synchronize repairs it", reason)
            self._skipped_in_sync = True
            await self._withdraw_mark()
            await asyncio.to_thread(self.applier.skip_failed, batch, index)
            return Cycle(1, reason)
        await self._out_of_sync(reason)
        return Cycle(0, reason)

    async def _waiting(self, reason: str) -> Cycle:
        if not reason.startswith("gap"):
            self._gap_since = None
            return Cycle(0, reason)
        now = time.monotonic()
        if self._gap_since is None:
            self._gap_since = now
            log.warning("%s; waiting up to %.0fs", reason, self.gap_timeout_s)
        if now - self._gap_since >= self.gap_timeout_s:
            await self._out_of_sync(f"{reason} for {self.gap_timeout_s:.0f}s")
            self._out_for_gap = True
            self._gap_reason = f"{reason} for {self.gap_timeout_s:.0f}s"
        return Cycle(0, reason)

    def stopped_at_gap(self) -> str:
        """Why applying stopped at a batch that never came ('' when it did not): what is
        applied is the journal's unbroken beginning, and nothing after the gap is."""
        if self.state is ReplicaState.OUT_OF_SYNC and self._out_for_gap:
            return self._gap_reason
        return ""

    async def _out_of_sync(self, reason: str) -> None:
        self._out_for_gap = False
        if self.on_verified is not None:
            await self.on_verified(False)
        log.error("replica out of sync: %s", reason)
        self.state = ReplicaState.OUT_OF_SYNC
        await self.report_state(self.state, reason)

    async def _pause(self, reason: str) -> None:
        if self.state is not ReplicaState.PAUSED:
            log.error("%s; retrying every second, nothing is skipped", reason)
            self.state = ReplicaState.PAUSED
            self._disk_alerted = True
            await self.raise_alert(DISK_FULL, reason)
            await self.report_state(self.state, reason)

    async def disk_alert_ended(self, reason: str) -> None:
        """Clear the disk_full alert, if raised: applying went on (or the side ends)."""
        if self._disk_alerted:
            self._disk_alerted = False
            if self.clear_alert is not None:
                await self.clear_alert(DISK_FULL, reason)

    async def run(self, idle_s: float = 0.5) -> None:
        while True:
            raise_if_cancelled()  # the timed wait below may have swallowed a stop
            cycle = await self.cycle()
            if cycle.applied:
                continue
            log.debug("apply: %s", cycle.reason)
            self.wakeup.clear()
            delay = 1.0 if self.state is ReplicaState.PAUSED else idle_s
            try:
                await asyncio.wait_for(self.wakeup.wait(), timeout=delay)
            except TimeoutError:
                pass

    async def begin_resync(self) -> None:
        """Verify & synchronize started: apply everything there is, skipping gaps (and ops
        that cannot be applied). The first thing skipped withdraws the verified mark until a
        verify ends well: kept, a target killed mid-verify came back 'verified' with what it
        skipped never repaired (chaos s092). While nothing is skipped, the replica is still
        the journal's beginning, as verified before."""
        self._skip_gaps = True
        self._out_for_gap = False
        if self.state is not ReplicaState.SYNCING:
            self._before_sync = self.state
            self.state = ReplicaState.SYNCING
            await self.report_state(self.state, "verify & synchronize started")
        self.wakeup.set()

    async def _withdraw_mark(self) -> None:
        if not self._mark_withdrawn and self.on_verified is not None:
            log.info(
                "replica not known to match until this verify ends: it skipped what it repairs"
            )
            await self.on_verified(False)
        self._mark_withdrawn = True

    async def end_resync(self, ok: bool, reason: str) -> None:
        self._skip_gaps = False
        self._skipped_in_sync = False
        self._mark_withdrawn = False
        if ok:
            self.state = ReplicaState.IN_SYNC
            self.unverified = False
            await self.disk_alert_ended("verify & synchronize wrote the replica: the disk has room")
            if self.on_verified is not None:
                await self.on_verified(True)
        elif self.state is ReplicaState.SYNCING:
            # A verify that could not finish (e.g. the disk is full) leaves things as it
            # found them: a paused replica stays paused, one in sync keeps applying.
            self.state = self._before_sync
        await self.report_state(self.state, reason)
        self.wakeup.set()

    async def wait_applied(
        self, upto: tuple[int, int], timeout: float, *, accept_gap: bool = False
    ) -> str:
        """Return once batch ``upto`` (and all before it) is applied; TimeoutError if not.

        ``accept_gap``: return early, with why, once applying stopped at a batch that never
        came (``stopped_at_gap``): what a new Active takes over after its old Active died
        before storing a batch it had sent the ones after (they were never acknowledged as
        stored, so in sync mode none of their writes was acknowledged either)."""
        if upto[1] == 0:
            return ""  # nothing was journaled yet
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.applied_upto() < upto:
            gap = self.stopped_at_gap() if accept_gap else ""
            if gap:
                return gap
            if loop.time() > deadline:
                raise TimeoutError(f"batch {upto[0]}:{upto[1]} not applied within {timeout}s")
            self.wakeup.set()
            await asyncio.sleep(0.02)
        return ""
