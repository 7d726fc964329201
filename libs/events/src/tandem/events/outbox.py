"""Events a service must not lose while the bus is away: kept in order, published when it is back.

Every event a service emits goes through an outbox: ``put`` never blocks and never raises,
and a single task (``run``) publishes the queue in order, retrying transient failures (a
timeout, no responders while a stream elects its leader, a reconnect) with backoff until the
stream has stored each event. An event's id is its Nats-Msg-Id, so a retry after an
unacknowledged publish is stored once (within the stream's duplicate window, 10 minutes).

With ``path`` the outbox is durable (``outbox_file.py``): an event is written to an
append-only file before ``put`` returns and fsynced soon after, and an outbox opened on the
same folder after a crash sends what was waiting, first and in order. Without it the queue
lives in memory (a service whose state is rebuilt from the stream on start).

An event the bus refuses for good (over the size limit, a subject it rejects) would block
everything behind it: it goes to the dead-letter stream with the reason, and the rest go on.
The queue is bounded by ``limit``: past it the oldest event is dropped with a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from tandem.events import subjects
from tandem.events.bus import Bus, event_headers
from tandem.events.cancel import raise_if_cancelled
from tandem.events.deadletter import Rejected, dead_letter
from tandem.events.envelope import Event
from tandem.events.outbox_file import OutboxFile
from tandem.events.transient import Backoff, describe, is_transient, retry_transient

log = logging.getLogger(__name__)


class Outbox:
    def __init__(
        self,
        bus: Bus,
        *,
        path: Path | None = None,
        limit: int = 10_000,
        timeout_s: float = 5.0,
        max_backoff_s: float = 5.0,
    ) -> None:
        self.bus = bus
        #: Each queued event with the file offset just past it (None: in memory only).
        self._queue: deque[tuple[Event, int | None]] = deque()
        self._limit = limit
        self._timeout_s = timeout_s
        self._max_backoff_s = max_backoff_s
        self._ready = asyncio.Event()
        self._unsynced = asyncio.Event()
        self._empty = asyncio.Event()
        self._empty.set()
        self.dropped = 0
        self.dead_lettered = 0
        self.published = 0
        #: Callers of ``stored`` waiting on an event (by id): its outcome once sent.
        self._waiters: dict[str, asyncio.Future[None]] = {}
        self._file: OutboxFile | None = None
        if path is not None:
            self._file = OutboxFile(path)
            waiting = self._file.pending()
            if waiting:
                log.info("outbox %s: %s events of an earlier run go first", path, len(waiting))
            for stored in waiting:
                self._enqueue(stored.event, stored.end)

    @property
    def durable(self) -> bool:
        return self._file is not None

    def put(self, event: Event) -> None:
        """Queue ``event``; never blocks, never raises."""
        end: int | None = None
        if self._file is not None:
            try:
                end = self._file.append(event)
                self._unsynced.set()
            except OSError as exc:  # a full or failing disk: the event still goes out
                log.error("outbox file: %s; %s %s kept in memory only", exc, event.type, event.id)
        self._enqueue(event, end)

    def _enqueue(self, event: Event, end: int | None) -> None:
        if len(self._queue) >= self._limit:
            lost, lost_end = self._queue.popleft()
            self.dropped += 1
            log.warning("outbox full (%s): dropped %s %s", self._limit, lost.type, lost.id)
            self._advance(lost_end)
        self._queue.append((event, end))
        self._empty.clear()
        self._ready.set()

    def __len__(self) -> int:
        return len(self._queue)

    async def stored(
        self, event: Event, *, keep_going: Callable[[], bool] | None = None, poll_s: float = 0.2
    ) -> bool:
        """Queue ``event`` (in the file first, when durable) and wait until the sender has it
        stored: True. False when ``keep_going()`` turned false first; the event stays
        queued (and in the file) and is sent later. Raises what the bus refused it with."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiters[event.id] = waiter
        try:
            self.put(event)
            while True:
                done, _ = await asyncio.wait({waiter}, timeout=poll_s)
                if done:
                    waiter.result()
                    return True
                if keep_going is not None and not keep_going():
                    return False
        finally:
            self._waiters.pop(event.id, None)

    def pending_ids(self) -> list[str]:
        return [event.id for event, _ in self._queue]

    async def run(self) -> None:
        syncer = asyncio.create_task(self._sync_forever()) if self._file is not None else None
        try:
            await self._send_forever()
        finally:
            if syncer is not None:
                syncer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await syncer

    async def _send_forever(self) -> None:
        backoff = Backoff(max_s=self._max_backoff_s)
        failing_since: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            raise_if_cancelled()  # a timed wait may have swallowed a stop
            if not self._queue:
                self._ready.clear()
                await self._ready.wait()
                continue
            event, end = self._queue[0]
            try:
                await self.bus.publish(event, timeout=self._timeout_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not is_transient(exc):
                    await self._set_aside(event, exc)
                    self._done(event, end, exc)
                    continue
                if failing_since is None:
                    failing_since = loop.time()
                    log.warning(
                        "bus unavailable, %s events waiting (%s); retrying",
                        len(self._queue),
                        describe(exc),
                    )
                await backoff.wait()
                continue
            if failing_since is not None:
                log.info(
                    "bus back after %.1fs; %s events still to send",
                    loop.time() - failing_since,
                    len(self._queue) - 1,
                )
                failing_since = None
            backoff.reset()
            self.published += 1
            self._done(event, end)

    def _done(self, event: Event, end: int | None, refused: Exception | None = None) -> None:
        if self._queue and self._queue[0][0] is event:
            self._queue.popleft()
        waiter = self._waiters.get(event.id)
        if waiter is not None and not waiter.done():
            if refused is None:
                waiter.set_result(None)
            else:
                waiter.set_exception(refused)
        self._advance(end)
        if not self._queue:
            self._empty.set()

    def _advance(self, end: int | None) -> None:
        if self._file is None or end is None:
            return
        try:
            self._file.advance(end)
        except OSError as exc:  # sent again after a restart: the stream de-duplicates
            log.error("outbox file: cannot record what was sent: %s", exc)

    async def _set_aside(self, event: Event, exc: Exception) -> None:
        reason = f"the bus refused event {event.type} {event.id}: {describe(exc)}"
        log.error("%s; dead-lettering it", reason)
        rejected = Rejected(
            consumer="outbox",
            reason=reason,
            subject=subjects.event_subject(event.cluster, event.type),
            data=event.to_json(),
            original_headers=event_headers(event),
        )
        try:
            await retry_transient(
                "dead-lettering a refused event",
                lambda: dead_letter(self.bus, rejected),
                max_backoff_s=self._max_backoff_s,
            )
            self.dead_lettered += 1
        except Exception as dlq_exc:
            log.error("could not dead-letter %s %s: %s", event.type, event.id, dlq_exc)

    async def _sync_forever(self) -> None:
        assert self._file is not None
        while True:
            raise_if_cancelled()  # a timed wait may have swallowed a stop
            await self._unsynced.wait()
            self._unsynced.clear()
            try:
                await asyncio.to_thread(self._file.sync)
            except OSError as exc:
                log.error("outbox file: fsync failed: %s", exc)
            await asyncio.sleep(0.02)  # appends in a burst share one fsync

    async def flush(self, timeout: float) -> bool:
        """Wait until every queued event is published (True) or ``timeout`` passed (False)."""
        try:
            await asyncio.wait_for(self._empty.wait(), timeout)
        except TimeoutError:
            return False
        return True

    @contextlib.asynccontextmanager
    async def sending(self, flush_s: float = 5.0) -> AsyncIterator[Outbox]:
        """Run the sender for the body of a ``with``; on the way out, give what is still
        queued ``flush_s`` to reach the bus (a durable outbox keeps the rest for next time)."""
        sender = asyncio.create_task(self.run())
        try:
            yield self
        finally:
            if not await self.flush(flush_s):
                where = "kept in its file" if self.durable else "lost"
                log.warning("%s events not sent before the stop: %s", len(self), where)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            self.close()

    def close(self) -> None:
        """Make what is queued durable and release the file (the events stay in it)."""
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.sync()
            self._file.close()
