"""The events this orchestrator folds into its state, handed live to API stream clients.

The state projection tells the feed of each event right after folding it, so a client that
is sent an event and then reads the cluster's view sees the view with that event in it. The
feed keeps the latest events for clients that resume (``after`` a sequence they saw); one that
asks for older events than it keeps reads them from the stream (``recent_after`` says so). A
client too slow to keep up is dropped, not waited for: it resumes from what it saw.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from tandem.events.envelope import Event

#: Events kept for resuming clients (a console reconnecting after a network blip).
KEEP_RECENT = 4096
#: Events queued for one client before it counts as too slow and is dropped.
CLIENT_QUEUE = 4096
#: A cluster's view made for one client is sent to the others as is for this long, unless an
#: event of the cluster was folded since (its live ages, e.g. of heartbeats, may be that old).
VIEW_REUSE_S = 0.5


@dataclass(slots=True)
class Folded:
    seq: int
    event: Event
    #: Its frame as the stream sends it, made once for every client (see ``frame_of``).
    frame: bytes | None = None


class FeedClient:
    """One client's queue of folded events."""

    def __init__(self, size: int) -> None:
        self._queue: asyncio.Queue[Folded] = asyncio.Queue(maxsize=size)
        #: Set when the queue was full: events were missed, the client must resume.
        self.overflowed = False

    def offer(self, folded: Folded) -> None:
        if self.overflowed:
            return
        try:
            self._queue.put_nowait(folded)
        except asyncio.QueueFull:
            self.overflowed = True

    async def next_batch(self, timeout: float, stop: asyncio.Event | None = None) -> list[Folded]:
        """The events queued now, waiting up to ``timeout`` (or until ``stop`` is set) for the
        first; [] if none came."""
        getting = asyncio.ensure_future(self._queue.get())
        waits: set[asyncio.Future[Any]] = {getting}
        if stop is not None:
            waits.add(asyncio.ensure_future(stop.wait()))
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        if not getting.done() or getting.cancelled():
            return []
        first = getting.result()
        batch = [first]
        while not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return batch


class LiveFeed:
    def __init__(
        self, start: int = 0, *, keep: int = KEEP_RECENT, client_queue: int = CLIENT_QUEUE
    ) -> None:
        """``start``: the projection's position when the feed was attached to it."""
        self._recent: deque[Folded] = deque(maxlen=keep)
        self._clients: set[FeedClient] = set()
        self._client_queue = client_queue
        #: The sequence of the last event folded.
        self.position = start
        #: Every event folded after this sequence is kept.
        self._complete_after = start
        #: By cluster: the seq of its last event folded, and its view's frame made since.
        self._touched: dict[str, int] = {}
        self._views: dict[str, tuple[int, float, bytes]] = {}

    def folded(self, seq: int, event: Event) -> None:
        """The projection's ``on_fold``: never blocks."""
        f = Folded(seq, event)
        if len(self._recent) == self._recent.maxlen:
            self._complete_after = self._recent[0].seq
        self._recent.append(f)
        self.position = seq
        self._touched[event.cluster] = seq
        for client in self._clients:
            client.offer(f)

    @contextlib.contextmanager
    def client(self) -> Iterator[FeedClient]:
        """A client queue for the ``with`` block: every event folded meanwhile reaches it."""
        c = FeedClient(self._client_queue)
        self._clients.add(c)
        try:
            yield c
        finally:
            self._clients.discard(c)

    def recent_after(self, seq: int) -> list[Folded] | None:
        """The kept events after ``seq``, or None when some of them are no longer kept (the
        caller reads those from the stream)."""
        if seq < self._complete_after:
            return None
        return [f for f in self._recent if f.seq > seq]

    def view_frame(self, cluster: str, make: Callable[[], bytes]) -> bytes:
        """The frame of ``cluster``'s view: made by ``make``, or the one made for another
        client less than ``VIEW_REUSE_S`` ago with no event of the cluster folded since."""
        touched = self._touched.get(cluster, 0)
        now = time.monotonic()
        kept = self._views.get(cluster)
        if kept is not None and kept[0] == touched and now - kept[1] < VIEW_REUSE_S:
            return kept[2]
        frame = make()
        self._views[cluster] = (touched, now, frame)
        return frame
