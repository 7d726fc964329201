"""The orchestrator's one way of publishing events, in two kinds.

- ``stored``: for the events the caller must know are in the stream before it goes on
  (``SagaStarted``, a saga's steps and end, ``RoleChanged``, a saga's own alerts). Publish,
  and on a transient failure (a timeout, no responders, a JetStream leader election, a
  reconnect) publish the same event again with backoff: its id is its Nats-Msg-Id, so the
  stream stores it once (de-duplication window 600 s). It stops only when the event is
  stored, when the process stops (cancelled), or when ``keep_going()`` turns false (the
  leadership was lost): then the event goes to the outbox (it did happen, and a live
  subscriber may have seen it), ``LeadershipLost`` says so and the caller stops; the next
  leader carries on from the stream.
- ``later``: fire-and-forget (decisions, their alerts, operator actions): put in the
  ``Outbox`` (never blocks), whose task (run by the service) publishes in order with backoff.

With a durable outbox (``TANDEM_ORCHESTRATOR_STATE_DIR``), ``stored`` events go through it
too: written to its file before they are first sent, so an orchestrator killed between
sending an event (a live subscriber may have seen it) and the stream's acknowledgement sends
it again after its restart, under the same id, and the stream holds what was seen.

One failure in a run of failures is logged at warning with its reason, the others at debug,
and the recovery at info: an outage of the bus is two lines, not a flood.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from tandem.events.bus import Bus
from tandem.events.envelope import Event
from tandem.events.outbox import Outbox
from tandem.events.transient import describe, is_transient, retry_transient
from tandem.orchestrator.facade import ConflictError

log = logging.getLogger(__name__)


class LeadershipLost(Exception):
    """This orchestrator stopped being the leader while it waited for the bus; ``str()``
    says what was left undone (the next leader resumes it from the stream)."""


@contextlib.asynccontextmanager
async def lost_is_conflict() -> AsyncIterator[None]:
    """For a request: a leadership lost while starting a saga is a 409 with the reason."""
    try:
        yield
    except LeadershipLost as exc:
        raise ConflictError(
            f"this orchestrator lost the leadership while the bus was away: {exc}"
        ) from None


class Publisher:
    def __init__(
        self,
        bus: Bus,
        *,
        outbox: Outbox | None = None,
        attempt_timeout_s: float = 5.0,
        max_backoff_s: float = 5.0,
    ) -> None:
        self.bus = bus
        #: None: ``later`` publishes as ``stored`` does (tests that run a runner alone).
        self.outbox = outbox
        self.attempt_timeout_s = attempt_timeout_s
        self.max_backoff_s = max_backoff_s

    async def stored(
        self, event: Event, *, keep_going: Callable[[], bool] | None = None, what: str = ""
    ) -> None:
        """Return once ``event`` is in the stream (see the module's doc)."""
        label = what or f"{event.type} {event.id}"
        if self.outbox is not None and self.outbox.durable:
            if not await self.outbox.stored(event, keep_going=keep_going):
                raise LeadershipLost(
                    f"{label}: not stored yet (kept in the outbox) and this orchestrator is "
                    "no longer the leader"
                )
            return
        try:
            await retry_transient(
                label,
                lambda: self.bus.publish(event, timeout=self.attempt_timeout_s),
                max_backoff_s=self.max_backoff_s,
                keep_going=keep_going,
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not is_transient(exc):
                log.error("%s: not stored, and it will not be: %s", label, describe(exc))
                raise
            # Transient, and retrying stopped: the leadership was lost. It happened, and a
            # subscriber may have seen it already: the record must have it too. The outbox
            # stores it later; the next leader goes on from what the stream holds by then.
            if self.outbox is not None:
                self.outbox.put(event)
            raise LeadershipLost(
                f"{label}: not known stored ({describe(exc)}) and this orchestrator "
                "is no longer the leader"
            ) from None

    async def later(self, event: Event) -> None:
        """Queue ``event`` for the outbox's task; without an outbox, publish it now (as
        ``stored``, for as long as it takes)."""
        if self.outbox is not None:
            self.outbox.put(event)
        else:
            await self.stored(event)
