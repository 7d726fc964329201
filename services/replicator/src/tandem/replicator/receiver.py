"""The journal consumer of one target node: check each batch, store it in the receive
queue, then acknowledge it. A durable consumer per target (a trio's Active has two). Each
fetched group is stored with one fsync before any of it is acknowledged.

Refusals are reported (``ReplicaRejectedBatch``) and dead-lettered with the reason:
a batch from an older epoch; a corrupt one (bad checksum or body), after it was fetched
again ``refetches`` times; one with a path outside the protected root.
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
from tandem.replicator.batch import H_EPOCH, H_SEQ, BatchError, unpack
from tandem.replicator.receivequeue import Incoming, ReceiveQueue

log = logging.getLogger(__name__)

#: (epoch, seq, reason) of a refused batch.
RefusalReporter = Callable[[int, int, str], Awaitable[None]]


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

    async def run(self) -> None:
        subject = journal_subject(self.cluster)
        sub = await self.bus.js.pull_subscribe(
            subject,
            durable=self.durable,
            stream=JOURNAL_STREAM,
            config=ConsumerConfig(
                durable_name=self.durable,
                ack_policy=AckPolicy.EXPLICIT,
                ack_wait=30,
                filter_subject=subject,
            ),
        )
        if self.on_ready is not None:
            await self.on_ready()
        try:
            while True:
                try:
                    raise_if_cancelled()  # 3.11's wait_for may have swallowed a cancel
                    msgs = await sub.fetch(64, timeout=1.0)
                except (NatsTimeoutError, TimeoutError):
                    continue
                await self.receive(msgs)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

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
        results = await asyncio.to_thread(self._check_and_store, items)
        stored: list[Incoming] = []
        for (msg, epoch, seq, _), result in zip(wanted, results, strict=True):
            if isinstance(result, BatchError):
                await self._unusable(msg, epoch, seq, result)
            else:
                await msg.ack()
                stored.append(result)
        for item in stored:
            await self.on_stored(item.epoch, item.seq)

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
            await self._refuse(
                msg,
                epoch,
                seq,
                f"stale epoch {epoch}: the cluster is at epoch {self.current_epoch()}",
            )
            return None
        if (epoch, seq) <= self.applied_upto():
            await msg.ack()  # a redelivery of what is applied already: changes nothing
            return None
        return epoch, seq, headers

    async def _unusable(self, msg: Msg, epoch: int, seq: int, exc: BatchError) -> None:
        if "refused" not in str(exc) and msg.metadata.num_delivered < self.refetches:
            log.warning("batch %s:%s unusable (%s); fetching it again", epoch, seq, exc)
            self.refetched += 1
            await msg.nak(delay=0.2)
            return
        await self._refuse(msg, epoch, seq, str(exc))

    async def _refuse(self, msg: Msg, epoch: int, seq: int, reason: str) -> None:
        log.warning("refused journal batch %s:%s: %s", epoch, seq, reason)
        meta = msg.metadata
        await dead_letter(
            self.bus,
            Rejected(
                consumer=self.durable,
                reason=reason,
                subject=msg.subject,
                data=msg.data,
                original_headers=msg.headers,
                source_stream=meta.stream,
                source_seq=meta.sequence.stream,
            ),
        )
        await msg.term()
        await self.report_refusal(epoch, seq, reason)
