"""``file``: one JSON line per notification (the webhook's body), appended and fsynced."""

from __future__ import annotations

import asyncio
import os

from tandem.events.catalog.notifications import ChannelKind
from tandem.notifier.channels.base import Context, DeliveryError, Sent, wire_body
from tandem.notifier.config import FileChannel
from tandem.notifier.notification import Notification


class FileSender:
    kind: ChannelKind = "file"

    def __init__(self, channel: FileChannel) -> None:
        self.path = channel.path

    async def send(self, n: Notification, ctx: Context) -> Sent:
        line = wire_body(n, ctx) + b"\n"
        try:
            await asyncio.to_thread(self._append, line)
        except OSError as exc:
            raise DeliveryError(f"{self.path}: {exc.strerror or exc}") from None
        return Sent(f"appended to {self.path}")

    def _append(self, line: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)
