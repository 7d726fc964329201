"""The channels a route sends through: ``send(notification, context)`` returns what the peer
answered (``Sent``) or raises ``DeliveryError``; the route retries."""

from __future__ import annotations

from tandem.notifier.channels.base import ChannelSender, Context, DeliveryError, Sent
from tandem.notifier.channels.email import EmailSender
from tandem.notifier.channels.file import FileSender
from tandem.notifier.channels.hook import HookSender
from tandem.notifier.channels.webhook import WebhookSender
from tandem.notifier.config import (
    Channel,
    EmailChannel,
    FileChannel,
    HookChannel,
    WebhookChannel,
)


def sender_for(channel: Channel) -> ChannelSender:
    if isinstance(channel, EmailChannel):
        return EmailSender(channel)
    if isinstance(channel, WebhookChannel):
        return WebhookSender(channel)
    if isinstance(channel, HookChannel):
        return HookSender(channel)
    assert isinstance(channel, FileChannel)
    return FileSender(channel)


__all__ = ["ChannelSender", "Context", "DeliveryError", "Sent", "sender_for"]
