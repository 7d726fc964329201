"""Publish sealed batches to ``TANDEM_JOURNAL``: pipelined, in order, retried until stored.

Each round takes every sealed batch that is ready (up to ``window``), sends them all with
``publish_async`` and then awaits the acks together, so a round trip is paid per round, not
per batch. The message id ``<cluster>:<epoch>:<seq>`` makes a re-send after a lost ack
harmless. A batch whose ack failed is sent again, with every later unacked one, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable

from tandem.events import headers as hdr
from tandem.events.bus import Bus
from tandem.events.subjects import JOURNAL_STREAM, journal_msg_id, journal_subject
from tandem.replicator.sendqueue import Sealed, SendQueue

log = logging.getLogger(__name__)


class JournalPublisher:
    def __init__(
        self,
        bus: Bus,
        cluster: str,
        queue: SendQueue,
        *,
        window: int = 256,
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
        sealed = asyncio.Event()

        def on_sealed() -> None:  # any thread
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
                loop.call_soon_threadsafe(sealed.set)

        self.queue.on_sealed = on_sealed
        while True:
            self.queue.seal_if_older()
            if not self._unsent:
                sealed.clear()  # before looking: a seal from now on wakes the wait below
                # In a thread, without waiting there (a cancelled run must not leave a taker
                # behind): taking a batch encodes it (codec, checksum).
                await asyncio.to_thread(self._collect)
            batches = self._unsent[: self.window]
            if not batches:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(sealed.wait(), tick)
                continue
            failed = await self._send(batches)
            del self._unsent[: len(batches) - len(failed)]
            if failed:
                log.warning(
                    "journal: %d batches not stored; retrying in %.1fs", len(failed), backoff
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            else:
                backoff = 0.2

    def _collect(self) -> None:
        with self._take_lock:  # two takers (one left by a cancelled run) keep the order
            for _ in range(self.window):
                taken = self.queue.take(0)
                if taken is None:
                    break
                self._unsent.append(taken)

    async def _send(self, batches: list[Sealed]) -> list[Sealed]:
        """Publish ``batches`` in order; return those (from the first failure on) to resend."""
        futures = []
        try:
            for b in batches:
                headers = {**b.headers, hdr.MSG_ID: journal_msg_id(self.cluster, b.epoch, b.seq)}
                if self.direct_subject is not None:
                    await self.bus.nc.publish(self.direct_subject, b.data, headers=headers)
                futures.append(
                    await self.bus.js.publish_async(self.subject, b.data, headers=headers)
                )
            results = await asyncio.wait_for(
                asyncio.gather(*futures, return_exceptions=True), timeout=self.ack_timeout_s
            )
        except Exception as exc:  # the connection is away, a stall, a timeout
            log.warning("journal publish round failed: %s", exc)
            for f in futures:
                f.cancel()
            return batches
        for i, (b, result) in enumerate(zip(batches, results, strict=True)):
            if (
                isinstance(result, BaseException)
                or getattr(result, "stream", None) != JOURNAL_STREAM
            ):
                log.warning("journal batch %s:%s not stored: %s", b.epoch, b.seq, result)
                return batches[i:]
            self.queue.acked(b.seq)
            self.stored_upto = b.seq
            self.on_stored(b)
        return []

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
