"""What every channel shares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from tandem.events.catalog.notifications import ChannelKind
from tandem.notifier.notification import Notification
from tandem.notifier.payloads import body_bytes, webhook_body


class DeliveryError(Exception):
    """This attempt failed (the reason is for the log and ``NotificationFailed``)."""

    def __init__(self, reason: str, exit_code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.exit_code = exit_code


@dataclass(frozen=True)
class Sent:
    detail: str
    exit_code: int | None = None


@dataclass(frozen=True)
class Context:
    """What a channel needs besides the notification."""

    route: str
    external_url: str
    #: Notifications of this cluster the rate limit held back since the last one sent.
    held_back: int = 0


def wire_body(n: Notification, ctx: Context) -> bytes:
    """The JSON body the webhook posts, a hook reads on stdin and the file channel appends."""
    return body_bytes(
        webhook_body(n, receiver=ctx.route, external_url=ctx.external_url, held_back=ctx.held_back)
    )


class ChannelSender(Protocol):
    kind: ChannelKind

    async def send(self, n: Notification, ctx: Context) -> Sent: ...
