"""Whether a saga is running on this node's cluster, as the event stream tells it.

A node that a saga took down (``StopApplications``, ``Hide``) waits for the saga's own
steps rather than coming back by itself. When that saga failed before its role change and
its undo could not reach the node (the node was down then), nobody would ever bring it back:
the role record still names it Active at its epoch, and no saga runs any more. The node finds
that here: the cluster's last ``SagaStarted`` has its end (``SagaCompleted`` / ``SagaFailed``)
stored. Sagas of a cluster run one at a time, so the last one started is the one to ask about.
"""

from __future__ import annotations

import asyncio
import logging

from nats.js.errors import NotFoundError

from tandem.events.bus import Bus
from tandem.events.registry import decode_event
from tandem.events.subjects import EVENTS_STREAM, event_subject

log = logging.getLogger(__name__)

#: Short: the role watch waits on this in its loop (a demotion must not wait behind it).
_TIMEOUT_S = 2.0


async def _last_saga_id(bus: Bus, cluster: str, event_type: str) -> str | None:
    try:
        msg = await asyncio.wait_for(
            bus.js.get_last_msg(EVENTS_STREAM, event_subject(cluster, event_type)), _TIMEOUT_S
        )
    except NotFoundError:
        return None
    if msg.data is None:
        return None
    saga_id = getattr(decode_event(msg.data).payload, "saga_id", None)
    return str(saga_id) if saga_id is not None else None


async def saga_running(bus: Bus, cluster: str) -> bool | None:
    """True while the cluster's last saga has no stored end, False when it has (or none
    ever started), None when the stream cannot tell now (the bus away: keep waiting)."""
    try:
        started = await _last_saga_id(bus, cluster, "SagaStarted")
        if started is None:
            return False
        ended = {
            await _last_saga_id(bus, cluster, "SagaCompleted"),
            await _last_saga_id(bus, cluster, "SagaFailed"),
        }
    except Exception as exc:  # transient or not, the answer is "unknown": waiting is safe
        log.debug("saga state unreadable: %s", exc)
        return None
    return started not in ended
