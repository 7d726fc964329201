"""The journal consumer of one target node: check each batch, store it in the receive
queue, then acknowledge it. A durable consumer per target (a trio's Active has two). Each
fetched group is stored with one fsync before any of it is acknowledged. A sync-mode source
also sends each batch directly (``syncmode.direct_subject``): stored at once when new and
usable, and its journal copy is then acknowledged without storing it again. After each store
``on_stored(epoch, seq)`` says up to which seq every batch of the epoch is here.

Refusals are reported (``ReplicaRejectedBatch``) and dead-lettered with the reason: a
corrupt batch (bad checksum or body), after it was fetched again ``refetches`` times; one
with a path outside the protected root. A batch of an older epoch is no fault: the old
Active's last batches, journaled before it learnt of the role change. It is skipped and
acknowledged, reported as ``stale`` (an info event), and never dead-lettered: the
dead-letter stream holds only what is malformed or unprocessable.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig

from tandem.events.bus import Bus
from tandem.events.cancel import raise_if_cancelled
from tandem.events.deadletter import Rejected, dead_letter
from tandem.events.subjects import JOURNAL_STREAM, journal_subject
from tandem.events.transient import describe, is_transient
from tandem.replicator.batch import H_EPOCH, H_SEQ, BatchError, unpack
from tandem.replicator.receivequeue import Incoming, ReceiveQueue
from tandem.replicator.syncmode import direct_subject

log = logging.getLogger(__name__)

#: (epoch, seq, reason, stale) of a refused batch (stale: of an older epoch, skipped).
RefusalReporter = Callable[[int, int, str, bool], Awaitable[None]]


class JournalReceiver:
    def __init__(
        self,
        bus: Bus,
        cluster: str,
        node: str,
        queue: ReceiveQueue,
        *,
        current_epoch: Callable[[], int],
        applied_upto: Callable[[], tuple[int, int]],
        on_stored: Callable[[int, int], Awaitable[None]],
        report_refusal: RefusalReporter,
        refetches: int = 3,
        on_ready: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.bus = bus
        self.cluster = cluster
        self.durable = f"jrnl-{cluster}-{node}"
        self.queue = queue
        self.current_epoch = current_epoch
        self.applied_upto = applied_upto
        self.on_stored = on_stored
        self.report_refusal = report_refusal
        self.refetches = refetches
        self.refetched = 0
        self.on_ready = on_ready
        # The journal's group and a direct batch are stored one at a time (one appender).
        self._store_lock = asyncio.Lock()
        self._held: dict[int, int] = {}  # epoch -> every batch up to this seq is here
        #: epoch -> how many of its batches were skipped as stale.
        self.skipped_stale: dict[int, int] = {}

    async def run(self) -> None:
        subject = journal_subject(self.cluster)
        sub = await self.bus.js.pull_subscribe(
            subject,
            durable=self.durable,
            stream=JOURNAL_STREAM,
            config=ConsumerConfig(
                durable_name=self.durable,
                ack_policy=AckPolicy.EXPLICIT,
                # Batches fetched but lost on the way (the stream's leader changed under the
                # fetch) come again after this: well within the apply loop's gap wait.
                ack_wait=10,
                filter_subject=subject,
            ),
        )
        direct = await self.bus.nc.subscribe(direct_subject(self.cluster), cb=self._direct)
        if self.on_ready is not None:
            await self.on_ready()
        try:
            while True:
                try:
                    raise_if_cancelled()  # 3.11's wait_for may have swallowed a cancel
                    msgs = await sub.fetch(64, timeout=1.0)
                except (NatsTimeoutError, TimeoutError):
                    continue
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    # The stream is electing a leader or the connection is coming back.
                    log.info("journal fetch failed (%s); fetching again", describe(exc))
                    await asyncio.sleep(0.5)
                    continue
                await self.receive(msgs)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            with contextlib.suppress(Exception):
                await direct.unsubscribe()

    async def receive(self, msgs: list[Msg]) -> None:
        """Check a fetched group, store what is good with one fsync, then ack it."""
        wanted: list[tuple[Msg, int, int, dict[str, str]]] = []
        for msg in msgs:
            screened = await self._screen(msg)
            if screened is not None:
                wanted.append((msg, *screened))
        if not wanted:
            return
        # Off the event loop, in one hop: decompressing and parsing is CPU work, storing waits
        # for the disk.
        items = [Incoming(epoch, seq, m.data, h) for m, epoch, seq, h in wanted]
        async with self._store_lock:
            results = await asyncio.to_thread(self._check_and_store, items)
        epochs: set[int] = set()
        for (msg, epoch, seq, _), result in zip(wanted, results, strict=True):
            if isinstance(result, BatchError):
                await self._unusable(msg, epoch, seq, result)
            else:
                await msg.ack()
                epochs.add(epoch)
        await self._announce(epochs)

    async def _direct(self, msg: Msg) -> None:
        """A batch sent straight from a sync-mode source: stored now if it is new and usable;
        anything else is left to the journal's copy (refusals, refetches, dead letters)."""
        headers = dict(msg.headers or {})
        try:
            epoch, seq = int(headers[H_EPOCH]), int(headers[H_SEQ])
        except (KeyError, ValueError):
            return
        try:
            async with self._store_lock:
                if (
                    epoch < self.current_epoch()
                    or (epoch, seq) <= self.applied_upto()
                    or self.queue.has(epoch, seq)
                ):
                    return
                item = Incoming(epoch, seq, msg.data, headers)
                [result] = await asyncio.to_thread(self._check_and_store, [item])
        except OSError as exc:  # the journal's copy is stored (or paused on) later
            log.warning("direct batch %s:%s not stored: %s", epoch, seq, exc)
            return
        if isinstance(result, BatchError):
            log.info("direct batch %s:%s unusable: %s", epoch, seq, result)
            return
        await self._announce({epoch})

    async def _announce(self, epochs: set[int]) -> None:
        for epoch in sorted(epochs):
            await self.on_stored(epoch, self._held_upto(epoch))

    def _held_upto(self, epoch: int) -> int:
        """The highest seq of ``epoch`` up to which every batch is stored or applied: what
        a sync-mode writer may count as held by this target."""
        applied_epoch, applied = self.applied_upto()
        seq = max(self._held.get(epoch, 0), applied if applied_epoch == epoch else 0)
        while self.queue.has(epoch, seq + 1):
            seq += 1
        self._held[epoch] = seq
        for old in sorted(self._held)[:-4]:
            del self._held[old]
        return seq

    def _check_and_store(self, items: list[Incoming]) -> list[Incoming | BatchError]:
        """Decode each batch (refusing what is unusable), then store the good ones with one
        fsync. Returns, per item, the stored item (with its decoded batch) or the error."""
        results: list[Incoming | BatchError] = []
        for item in items:
            try:
                batch = unpack(item.data, item.headers)
            except BatchError as exc:
                results.append(exc)
            else:
                results.append(dataclasses.replace(item, decoded=batch))
        self.queue.put_many([r for r in results if isinstance(r, Incoming)])
        return results

    async def _screen(self, msg: Msg) -> tuple[int, int, dict[str, str]] | None:
        """(epoch, seq, headers) of a batch to store; None if it was refused or is applied."""
        headers = dict(msg.headers or {})
        try:
            epoch, seq = int(headers[H_EPOCH]), int(headers[H_SEQ])
        except (KeyError, ValueError):
            await self._refuse(msg, -1, -1, "no valid epoch/sequence headers")
            return None
        if epoch < self.current_epoch():
            await self._skip_stale(msg, epoch, seq)
            return None
        if (epoch, seq) <= self.applied_upto():
            await msg.ack()  # a redelivery of what is applied already: changes nothing
            return None
        if self.queue.has(epoch, seq):
            await msg.ack()  # stored already (sent directly, or delivered twice)
            return None
        return epoch, seq, headers

    async def _unusable(self, msg: Msg, epoch: int, seq: int, exc: BatchError) -> None:
        if "refused" not in str(exc) and msg.metadata.num_delivered < self.refetches:
            log.warning("batch %s:%s unusable (%s); fetching it again", epoch, seq, exc)
            self.refetched += 1
            await msg.nak(delay=0.2)
            return
        await self._refuse(msg, epoch, seq, str(exc))

    async def _skip_stale(self, msg: Msg, epoch: int, seq: int) -> None:
        now = self.current_epoch()
        reason = f"stale epoch {epoch}: the cluster is at epoch {now}"
        first = epoch not in self.skipped_stale
        self.skipped_stale[epoch] = self.skipped_stale.get(epoch, 0) + 1
        if first:
            log.info(
                "skipping journal batches of epoch %s (from %s:%s): the cluster is at epoch %s "
                "(the old Active's last batches; expected after a role change)",
                epoch, epoch, seq, now,
            )  # fmt: skip
        await msg.ack()
        await self.report_refusal(epoch, seq, reason, True)

    async def _refuse(self, msg: Msg, epoch: int, seq: int, reason: str) -> None:
        log.warning("refused journal batch %s:%s: %s", epoch, seq, reason)
        await dead_letter(self.bus, Rejected.of_message(msg, self.durable, reason))
        await msg.term()
        await self.report_refusal(epoch, seq, reason, False)
