"""Follow every key of a KV bucket as it changes, and know up to when nothing was missed.

One ordered push consumer delivers each write of the bucket's stream once, in stream order
(the last value of each key first, then every write as it is stored): the reader does no
work for keys that do not change, and N keys cost nothing until they are written.

A watch that is silent proves nothing by itself: the consumer may have stalled (its server
lost, the stream electing a leader, the connection away). So every ``check_every_s`` the
stream's last sequence is asked for. When everything up to it has been delivered, every
write stored before the question was asked has been seen: ``known_until`` is the time of
the question, never of the answer (by this process's clock). A reader judging silence (a
lease not renewed) judges it up to ``known_until`` only, so a stall can delay a verdict but
never fake one. A consumer behind for ``stall_s`` is made again from where it stopped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from tandem.events.bus import Bus
from tandem.events.cancel import raise_if_cancelled
from tandem.events.transient import describe

log = logging.getLogger(__name__)

#: ``on_write(key, revision, value, deleted)``: called on the event loop for each write.
OnWrite = Callable[[str, int, bytes, bool], None]

_DELETE_OPS = ("DEL", "PURGE")


class BucketWatch:
    def __init__(
        self,
        bus: Bus,
        bucket: str,
        on_write: OnWrite,
        *,
        check_every_s: float = 0.1,
        on_missing: Callable[[], Awaitable[object]] | None = None,
        stall_s: float = 3.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bus = bus
        self.bucket = bucket
        self.stream = f"KV_{bucket}"
        self.prefix = f"$KV.{bucket}."
        self.on_write = on_write
        #: Called when the bucket's stream does not exist (a memory bucket after a restart).
        self.on_missing = on_missing
        self.check_every_s = check_every_s
        self.stall_s = stall_s
        self.clock = clock
        #: Every write stored before this time (this process's clock) has been delivered;
        #: None until the first catch-up.
        self.known_until: float | None = None
        #: The newest stream sequence delivered.
        self.delivered_seq = 0
        self._sub: Any = None
        #: (asked at, the stream's last sequence then), oldest first, not yet delivered.
        self._asked: deque[tuple[float, int]] = deque()
        self._blind_told = False

    async def run(self) -> None:
        try:
            while True:
                raise_if_cancelled()  # a timed wait may have swallowed a stop
                await self.check()
                await asyncio.sleep(self.check_every_s)
        finally:
            await self.stop()

    async def stop(self) -> None:
        """End the consumer (``run`` does at its end; a caller of ``check`` does itself)."""
        await self._unsubscribe()

    async def check(self) -> None:
        """Subscribe if not yet, and ask how far the stream is: once delivered up to there,
        everything stored before the question was asked has been seen."""
        asked = self.clock()  # writes stored before this are in the answer's last sequence
        try:
            if self._sub is None:
                await self._subscribe()
            info = await asyncio.wait_for(self.bus.js.stream_info(self.stream), 2)
        except NotFoundError:
            self._cannot_see(f"{self.stream} does not exist")
            await self._unsubscribe()
            self.delivered_seq = 0
            self._asked.clear()
            if self.on_missing is not None:
                await self._restore()
            return
        except Exception as exc:
            self._cannot_see(f"{self.stream} unreadable: {describe(exc)}")
            return
        if info.state.last_seq < self.delivered_seq:
            # The stream was made again (an operator's re-provisioning): start over.
            self._cannot_see(f"{self.stream} restarted at sequence {info.state.last_seq}")
            await self._unsubscribe()
            self.delivered_seq = 0
            self._asked.clear()
            return
        self._asked.append((asked, info.state.last_seq))
        self._settle()
        oldest = self._asked[0][0] if self._asked else None
        if oldest is not None and asked - oldest >= self.stall_s:
            self._cannot_see(
                f"delivered up to {self.delivered_seq} of {self._asked[0][1]} for "
                f"{asked - oldest:.1f}s: the consumer is made again"
            )
            self._asked.clear()
            await self._unsubscribe()

    def _settle(self) -> None:
        """Move ``known_until`` to the newest question whose answer is all delivered."""
        settled = None
        while self._asked and self._asked[0][1] <= self.delivered_seq:
            settled = self._asked.popleft()[0]
        if settled is None:
            return
        self.known_until = settled
        if self._blind_told:
            log.info("watch of %s: caught up again", self.bucket)
            self._blind_told = False

    async def _restore(self) -> None:
        assert self.on_missing is not None
        try:
            said = await asyncio.wait_for(self.on_missing(), 5)
        except Exception as exc:
            log.warning(
                "watch of %s: it is missing and could not be made: %s", self.bucket, describe(exc)
            )
            return
        log.warning(
            "watch of %s: it was missing (a memory bucket after the bus restarted): %s",
            self.bucket,
            said,
        )

    def _cannot_see(self, why: str) -> None:
        if not self._blind_told:
            log.info("watch of %s: %s", self.bucket, why)
            self._blind_told = True

    async def _subscribe(self) -> None:
        # The first time each key's last value; after a stall, from the first write missed.
        if self.delivered_seq:
            config = ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=self.delivered_seq + 1
            )
        else:
            config = ConsumerConfig(deliver_policy=DeliverPolicy.LAST_PER_SUBJECT)
        self._sub = await asyncio.wait_for(
            self.bus.js.subscribe(
                self.prefix + ">",  # every key: the last sequence counts them all
                stream=self.stream,
                config=config,
                cb=self._on_msg,
                ordered_consumer=True,
                idle_heartbeat=1.0,
                inactive_threshold=30.0,
            ),
            5,
        )

    async def _unsubscribe(self) -> None:
        sub, self._sub = self._sub, None
        if sub is None:
            return
        try:
            await asyncio.wait_for(sub.unsubscribe(), 2)
        except Exception as exc:  # the connection is away: the server drops it by itself
            log.debug("watch of %s: unsubscribe: %s", self.bucket, describe(exc))

    async def _on_msg(self, msg: Msg) -> None:
        try:
            seq = msg.metadata.sequence.stream
        except Exception:  # not a stream message (a status the client did not take)
            return
        if seq <= self.delivered_seq:
            return  # delivered again after the consumer was made again
        self.delivered_seq = seq
        headers = msg.headers or {}
        deleted = headers.get("KV-Operation") in _DELETE_OPS or "Nats-Marker-Reason" in headers
        try:
            self.on_write(msg.subject[len(self.prefix) :], seq, msg.data, deleted)
        except Exception:
            log.exception("watch of %s: handling %s failed", self.bucket, msg.subject)
        if self._asked and self._asked[0][1] <= seq:
            self._settle()
