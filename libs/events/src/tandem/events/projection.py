"""Projections: state as a fold over the event stream.

A projection replays ``TANDEM_EVENTS`` from the start (or after a stored position), then
follows new events live. ``position`` is the stream sequence of the last event folded in;
a message at or below it (a redelivery, an overlap after a reconnect) changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import ConsumerConfig, DeliverPolicy

from tandem.events import subjects
from tandem.events.bus import Bus
from tandem.events.cancel import raise_if_cancelled
from tandem.events.deadletter import Rejected, dead_letter
from tandem.events.envelope import Event
from tandem.events.errors import DecodeError
from tandem.events.registry import decode_event

log = logging.getLogger(__name__)


class Projection(ABC):
    """Subclass and implement ``apply``. ``name`` is used for logs and the DLQ."""

    name: str = "projection"
    filter_subject: str = subjects.EVENTS_ALL

    def __init__(self, position: int = 0) -> None:
        self.position = position
        self.caught_up = asyncio.Event()
        #: Told of each event right after it is folded in (e.g. a live feed to API clients);
        #: it must not block, and what it raises is logged, never stops the fold.
        self.on_fold: Callable[[int, Event], None] | None = None

    @abstractmethod
    def apply(self, event: Event) -> None:
        """Fold one event into the state. Must not do I/O: state only."""

    def fold(self, seq: int, event: Event) -> bool:
        """Apply ``event`` at stream sequence ``seq`` unless already applied; True if applied."""
        if seq <= self.position:
            return False
        self.apply(event)
        self.position = seq
        if self.on_fold is not None:
            try:
                self.on_fold(seq, event)
            except Exception:
                log.exception("%s: the listener of folded events failed on seq %d", self.name, seq)
        return True

    async def run(self, bus: Bus) -> None:
        """Replay, then follow live, until cancelled."""
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE if self.position else DeliverPolicy.ALL,
            opt_start_seq=self.position + 1 if self.position else None,
        )
        sub = await bus.js.subscribe(
            self.filter_subject,
            stream=subjects.EVENTS_STREAM,
            ordered_consumer=True,
            config=config,
        )
        try:
            while True:
                try:
                    raise_if_cancelled()  # 3.11's wait_for may have swallowed a cancel
                    msg = await sub.next_msg(timeout=0.5)
                except (NatsTimeoutError, TimeoutError):
                    if not self.caught_up.is_set() and sub.pending_msgs == 0:
                        # Nothing (more) to replay: an empty stream, or a filter matching none.
                        info = await sub.consumer_info()
                        if info.num_pending == 0:
                            self.caught_up.set()
                    continue
                await self._receive(bus, msg)
        finally:
            with contextlib.suppress(Exception):  # the connection may be gone already
                await sub.unsubscribe()

    async def _receive(self, bus: Bus, msg: Msg) -> None:
        meta = msg.metadata
        seq = meta.sequence.stream
        if seq > self.position:
            try:
                self.fold(seq, decode_event(msg.data))
            except DecodeError as exc:
                rejected = Rejected.of_message(msg, self.name, f"undecodable: {exc.reason}")
                await dead_letter(bus, rejected)
                self.position = seq
        if meta.num_pending == 0:
            self.caught_up.set()

    async def wait_caught_up(self, timeout: float = 10.0) -> None:
        """Wait until the replay reached the end of the stream as it was when it started."""
        await asyncio.wait_for(self.caught_up.wait(), timeout=timeout)
