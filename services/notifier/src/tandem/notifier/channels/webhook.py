"""``webhook``: Alertmanager's JSON posted to a URL, signed with HMAC-SHA256.

``X-Tandem-Signature: sha256=<hex>`` is the HMAC of the exact body bytes with the key of
``hmac_key_file``; ``X-Tandem-Event-Id`` lets the receiver drop a repeat (a notifier killed
between the post and its ledger record posts the same event again). A 2xx answer is a
delivery; anything else, a timeout or a refused connection is an attempt that failed.
"""

from __future__ import annotations

import hashlib
import hmac

import httpx

from tandem.events.catalog.notifications import ChannelKind
from tandem.notifier.channels.base import Context, DeliveryError, Sent, wire_body
from tandem.notifier.config import WebhookChannel
from tandem.notifier.notification import Notification

SIGNATURE_HEADER = "X-Tandem-Signature"


def signature(key: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


class WebhookSender:
    kind: ChannelKind = "webhook"

    def __init__(self, channel: WebhookChannel) -> None:
        self.channel = channel

    async def send(self, n: Notification, ctx: Context) -> Sent:
        c = self.channel
        body = wire_body(n, ctx)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "tandem-notifier",
            "X-Tandem-Event-Id": n.event.id,
        }
        if c.hmac_key_file is not None:
            key = c.hmac_key_file.get_secret_value().encode()
            headers[SIGNATURE_HEADER] = signature(key, body)
        try:
            async with httpx.AsyncClient(timeout=c.timeout_s) as client:
                answer = await client.post(c.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise DeliveryError(f"POST {c.url}: {type(exc).__name__}: {exc}") from None
        if not 200 <= answer.status_code < 300:
            raise DeliveryError(f"POST {c.url}: HTTP {answer.status_code}")
        return Sent(f"HTTP {answer.status_code}")
