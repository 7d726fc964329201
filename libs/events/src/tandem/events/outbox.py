"""Events a node must not lose while the bus is away: kept in order, published when it is back.

A node keeps working without the bus (it restarts its applications, it fences itself), and
what it did must still reach the record afterwards. The outbox holds events in memory (a
bounded deque: the oldest are dropped with a warning past ``limit``) and a single task
publishes them in order, retrying with backoff. An event's id is its Nats-Msg-Id, so a
retry after an unacknowledged publish is deduplicated by the stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from tandem.events.bus import Bus
from tandem.events.envelope import Event

log = logging.getLogger(__name__)


class Outbox:
    def __init__(
        self, bus: Bus, *, limit: int = 10_000, timeout_s: float = 5.0, max_backoff_s: float = 5.0
    ) -> None:
        self.bus = bus
        self._queue: deque[Event] = deque()
        self._limit = limit
        self._timeout_s = timeout_s
        self._max_backoff_s = max_backoff_s
        self._ready = asyncio.Event()
        self.dropped = 0

    def put(self, event: Event) -> None:
        """Queue ``event``; never blocks, never raises."""
        if len(self._queue) >= self._limit:
            lost = self._queue.popleft()
            self.dropped += 1
            log.warning("outbox full (%s): dropped %s %s", self._limit, lost.type, lost.id)
        self._queue.append(event)
        self._ready.set()

    def __len__(self) -> int:
        return len(self._queue)

    async def run(self) -> None:
        backoff = 0.1
        while True:
            if not self._queue:
                self._ready.clear()
                await self._ready.wait()
                continue
            event = self._queue[0]
            try:
                await self.bus.publish(event, timeout=self._timeout_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.info("bus unavailable, %s events waiting: %s", len(self._queue), exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_backoff_s)
                continue
            backoff = 0.1
            if self._queue and self._queue[0] is event:
                self._queue.popleft()

    async def flush(self, timeout: float) -> bool:
        """Wait until every queued event is published (True) or ``timeout`` passed (False)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._queue:
            if loop.time() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True
