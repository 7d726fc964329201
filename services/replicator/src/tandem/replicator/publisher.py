"""Publish sealed batches to ``TANDEM_JOURNAL``: pipelined, in order, retried until stored.

A sliding window: up to ``window`` batches are published (``publish_async``) and not yet
acknowledged at any time; as the oldest is acknowledged the next ones go out, so the bus
stores one batch while the following ones are on the way and the next are being encoded.
Acks are handled in order. The message id ``<cluster>:<epoch>:<seq>`` makes a re-send after a
lost ack harmless: a batch whose ack failed is sent again, with every later unacked one, in
order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from tandem.events import headers as hdr
from tandem.events.bus import Bus
from tandem.events.cancel import raise_if_cancelled
from tandem.events.subjects import JOURNAL_STREAM, journal_msg_id, journal_subject
from tandem.replicator.sendqueue import Sealed, SendQueue

log = logging.getLogger(__name__)


#: Waiting batches up to this many bytes are taken (encoded) in the event loop itself.
INLINE_TAKE_BYTES = 64 << 10


class _RoundFailed(Exception):
    """The bus did not store a published batch: it and every later one are sent again."""


class JournalPublisher:
    def __init__(
        self,
        bus: Bus,
        cluster: str,
        queue: SendQueue,
        *,
        window: int = 32,
        ack_timeout_s: float = 10.0,
        on_stored: Callable[[Sealed], None] = lambda sealed: None,
        direct_subject: str | None = None,
    ) -> None:
        self.bus = bus
        self.cluster = cluster
        self.subject = journal_subject(cluster)
        self.queue = queue
        self.window = window
        self.ack_timeout_s = ack_timeout_s
        self.on_stored = on_stored
        #: Sync mode: each batch is also sent here (core NATS), straight to the targets.
        self.direct_subject = direct_subject
        self.stored_upto = 0
        # Taken from the queue, not yet stored by the bus, in order. Kept here (not in a local
        # of ``run``) so that a batch taken by a thread whose ``run`` was cancelled meanwhile
        # is still sent: by the next ``run`` (the drain at a stop runs one).
        self._unsent: list[Sealed] = []
        self._take_lock = threading.Lock()

    async def run(self) -> None:
        tick = max(0.005, self.queue.limits.batch_age_s / 2)
        backoff = 0.2
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()  # a batch was sealed, or an ack arrived

        def on_sealed() -> None:  # any thread
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(wake.set)

        self.queue.on_sealed = on_sealed
        # Published, not yet acknowledged: the first len(acks) batches of ``_unsent``.
        acks: list[tuple[asyncio.Future[Any], float]] = []
        try:
            while True:
                raise_if_cancelled()  # the timed wait below may have swallowed a stop
                wake.clear()  # before looking: what happens from now on wakes the wait below
                self.queue.seal_if_older()
                ready = self.queue.ready() if len(self._unsent) < self.window else 0
                if 0 < ready <= INLINE_TAKE_BYTES:
                    # A few small batches (a sync-mode writer waits for each): encoding them
                    # costs less than the hop to a thread and back.
                    self._collect(min(4, self.window - len(self._unsent)))
                elif ready:
                    # In a thread, without waiting there (a cancelled run must not leave a
                    # taker behind): taking a batch encodes it (codec, checksum).
                    await asyncio.to_thread(self._collect, self.window - len(self._unsent))
                try:
                    await self._publish_more(acks, wake)
                    stored = self._settle_acks(acks, loop.time())
                except _RoundFailed as exc:
                    log.warning(
                        "journal: %d batches not stored (%s); retrying in %.1fs",
                        len(self._unsent), exc, backoff,
                    )  # fmt: skip
                    for future, _ in acks:
                        future.cancel()
                    acks.clear()
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                if stored:
                    backoff = 0.2
                    continue  # room in the window: look for more at once
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), tick)
        finally:
            for future, _ in acks:
                future.cancel()

    def _collect(self, room: int) -> None:
        with self._take_lock:  # two takers (one left by a cancelled run) keep the order
            for _ in range(room):
                taken = self.queue.take(0)
                if taken is None:
                    break
                self._unsent.append(taken)

    async def _publish_more(
        self, acks: list[tuple[asyncio.Future[Any], float]], wake: asyncio.Event
    ) -> None:
        """Publish the taken batches that are not out yet, within the window."""
        loop = asyncio.get_running_loop()
        while len(acks) < min(self.window, len(self._unsent)):
            b = self._unsent[len(acks)]
            headers = {**b.headers, hdr.MSG_ID: journal_msg_id(self.cluster, b.epoch, b.seq)}
            try:
                if self.direct_subject is not None:
                    await self.bus.nc.publish(self.direct_subject, b.data, headers=headers)
                future = await self.bus.js.publish_async(self.subject, b.data, headers=headers)
            except Exception as exc:  # the connection is away, a stall
                raise _RoundFailed(f"publish failed: {exc}") from exc
            future.add_done_callback(lambda _: wake.set())
            acks.append((future, loop.time()))

    def _settle_acks(self, acks: list[tuple[asyncio.Future[Any], float]], now: float) -> int:
        """Release the acknowledged batches at the head of the window, in order; return how
        many. ``_RoundFailed`` when the oldest was refused or is overdue."""
        stored = 0
        while acks:
            future, sent_at = acks[0]
            if not future.done():
                if now - sent_at > self.ack_timeout_s:
                    raise _RoundFailed(f"no ack within {self.ack_timeout_s}s")
                break
            b = self._unsent[0]
            exc = future.exception() if not future.cancelled() else asyncio.CancelledError()
            result = None if exc is not None else future.result()
            if exc is not None or getattr(result, "stream", None) != JOURNAL_STREAM:
                raise _RoundFailed(f"batch {b.epoch}:{b.seq}: {exc or result}")
            acks.pop(0)
            del self._unsent[0]
            self.queue.acked(b.seq)
            self.stored_upto = b.seq
            self.on_stored(b)
            stored += 1
        return stored

    async def drain(self, timeout: float) -> None:
        """Seal what is open and wait until every batch is stored (switchover step 2)."""
        self.queue.seal_now()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.stored_upto < self.queue.last_sealed_seq:
            if loop.time() > deadline:
                raise TimeoutError(
                    f"send queue not drained in {timeout}s: stored up to {self.stored_upto}, "
                    f"sealed up to {self.queue.last_sealed_seq}"
                )
            await asyncio.sleep(0.01)
