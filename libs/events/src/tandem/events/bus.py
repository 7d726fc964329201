"""The bus client: publish events (de-duplicated by id), reach KV buckets, send raw messages.

Consumers, projections and command request/reply live in their own modules and take a ``Bus``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping

from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.api import PubAck
from nats.js.kv import KeyValue

from tandem.events import headers, subjects
from tandem.events.connection import open_connection, open_connection_retrying
from tandem.events.envelope import Event
from tandem.events.errors import TandemBusError
from tandem.events.provisioning import provision
from tandem.events.settings import BusSettings, StreamSettings

log = logging.getLogger(__name__)


def event_headers(event: Event) -> dict[str, str]:
    return {
        headers.MSG_ID: event.id,
        headers.TYPE: event.type,
        headers.VERSION: str(event.version),
        headers.EPOCH: str(event.epoch),
        headers.CLUSTER: event.cluster,
    }


def _stored_in_events(ack: PubAck) -> PubAck:
    # Checked on the ack rather than with an Expected-Stream header: same guarantee that
    # events never land elsewhere unnoticed, at half the publish cost (see bench/bus.py).
    if ack.stream != subjects.EVENTS_STREAM:
        raise TandemBusError(f"event stored in stream {ack.stream}, not {subjects.EVENTS_STREAM}")
    return ack


class Bus:
    """One NATS connection with its JetStream context. Create with ``Bus.connect``."""

    def __init__(self, nc: NATS, settings: BusSettings) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(timeout=settings.request_timeout_s)
        self.settings = settings
        self._kv: dict[str, KeyValue] = {}

    @classmethod
    async def connect(
        cls, settings: BusSettings, *, name: str | None = None, retry_for_s: float | None = 0.0
    ) -> Bus:
        """Connect; with ``retry_for_s`` > 0, keep trying (with backoff) for that long; with
        None, for as long as it takes (a service: it must come back when the bus does)."""
        if retry_for_s is None or retry_for_s > 0:
            nc = await open_connection_retrying(settings, name, deadline_s=retry_for_s)
        else:
            nc = await open_connection(settings, name)
        return cls(nc, settings)

    async def close(self) -> None:
        if not self.nc.is_closed:
            try:
                await asyncio.wait_for(self.nc.drain(), timeout=5)
            except Exception as exc:  # drain times out, or fails if already disconnected
                log.debug("drain did not finish (%s); closing", exc)
                await self.nc.close()

    async def __aenter__(self) -> Bus:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def provision(
        self, streams: StreamSettings, *, update_existing: bool = True
    ) -> list[str]:
        return await provision(self.js, streams, update_existing=update_existing)

    async def publish(self, event: Event, *, timeout: float | None = None) -> PubAck:
        """Store one event; returns once JetStream acknowledged it (``ack.duplicate`` if seen)."""
        ack = await self.js.publish(
            subjects.event_subject(event.cluster, event.type),
            event.to_json(),
            timeout=timeout,
            headers=event_headers(event),
        )
        return _stored_in_events(ack)

    async def publish_many(self, events: Iterable[Event], *, timeout: float = 30.0) -> list[PubAck]:
        """Store several events with pipelined publishes; returns when every ack is in.

        Order in the stream follows the order given (one connection, sent in sequence).
        Raises on the first failed ack; events already acknowledged stay stored, and
        publishing the same events again is safe (ids de-duplicate).
        """

        async def send_all() -> list[PubAck]:
            futures = [
                await self.js.publish_async(
                    subjects.event_subject(e.cluster, e.type), e.to_json(), headers=event_headers(e)
                )
                for e in events
            ]
            return list(await asyncio.gather(*futures))

        # One deadline for the whole batch: a per-message wait_for costs more than the publish.
        acks = await asyncio.wait_for(send_all(), timeout=timeout)
        return [_stored_in_events(ack) for ack in acks]

    async def publish_raw(
        self,
        subject: str,
        data: bytes,
        msg_headers: Mapping[str, str] | None = None,
        *,
        stream: str | None = None,
        timeout: float | None = None,
    ) -> PubAck:
        return await self.js.publish(
            subject, data, timeout=timeout, stream=stream, headers=dict(msg_headers or {})
        )

    async def kv(self, bucket: str) -> KeyValue:
        if bucket not in self._kv:
            self._kv[bucket] = await self.js.key_value(bucket)
        return self._kv[bucket]
