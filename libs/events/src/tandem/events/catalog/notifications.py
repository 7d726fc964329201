"""What the notifier did with a notification: delivered on a route, or given up.

One of each per (event, route) at most: their ids derive from the notified event's id and the
route, so a notifier that records an outcome again after a restart stores it once.
``cluster`` is the notified event's cluster, ``node`` the notifier's instance.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tandem.events.envelope import Event, Payload
from tandem.events.registry import event_type

ChannelKind = Literal["email", "webhook", "hook", "file"]
#: firing / resolved: an alert raised or cleared; event: a role change (it has no end).
NotificationStatus = Literal["firing", "resolved", "event"]


class NotificationOutcome(Payload):
    route: str = Field(min_length=1)
    channel: ChannelKind
    #: The event notified (its id, type and sequence in TANDEM_EVENTS).
    event_id: str = Field(min_length=1, max_length=64)
    event_type: str
    stream_seq: int = Field(ge=0)
    status: NotificationStatus
    #: The alert's fingerprint ("" for a role change).
    fingerprint: str = ""
    attempts: int = Field(ge=1)
    #: A hook's exit status (negative: killed by that signal); None for other channels.
    exit_code: int | None = None


class NotificationDeliveredPayload(NotificationOutcome):
    #: What the peer answered: "250 OK", "HTTP 200", "exit 0", ...
    detail: str = ""


@event_type
class NotificationDelivered(Event):
    type: Literal["NotificationDelivered"] = "NotificationDelivered"
    version: Literal[1] = 1
    payload: NotificationDeliveredPayload


class NotificationFailedPayload(NotificationOutcome):
    reason: str


@event_type
class NotificationFailed(Event):
    """Every attempt failed; the route gave this notification up (it is not sent later)."""

    type: Literal["NotificationFailed"] = "NotificationFailed"
    version: Literal[1] = 1
    payload: NotificationFailedPayload
