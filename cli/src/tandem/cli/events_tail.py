"""``tandem events tail``: follow events live, decoded, one line each."""

from __future__ import annotations

import asyncio
from typing import Any

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import ConsumerConfig, DeliverPolicy
from rich.console import Console
from rich.markup import escape

from tandem.events.bus import Bus
from tandem.events.cancel import raise_if_cancelled
from tandem.events.envelope import Event
from tandem.events.errors import DecodeError
from tandem.events.registry import decode_event
from tandem.events.settings import BusSettings
from tandem.events.subjects import EVENTS_STREAM, events_filter


def format_event(event: Event) -> str:
    """``time  cluster/node  Type  e<epoch>  key=value ...`` (payload flattened one level)."""
    when = event.occurred_at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    fields = " ".join(f"{k}={_short(v)}" for k, v in event.payload.model_dump(mode="json").items())
    return f"{when}  {event.cluster}/{event.node}  {event.type}  e{event.epoch}  {fields}"


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


async def tail(
    console: Console,
    settings: BusSettings,
    *,
    cluster: str | None,
    event_type: str | None,
    count: int | None,
    history: int,
    idle_timeout_s: float | None,
) -> int:
    """Print events; returns the number printed. Stops after ``count`` or when idle too long."""
    subject = events_filter(cluster, event_type)
    async with await Bus.connect(settings, name="tandem-events-tail") as bus:
        info = await bus.js.stream_info(EVENTS_STREAM)
        start = max(info.state.first_seq, info.state.last_seq - history + 1)
        if history > 0 and info.state.last_seq > 0:
            config = ConsumerConfig(
                deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start
            )
        else:
            config = ConsumerConfig(deliver_policy=DeliverPolicy.NEW)
        sub = await bus.js.subscribe(
            subject, stream=EVENTS_STREAM, ordered_consumer=True, config=config
        )
        printed = 0
        loop = asyncio.get_running_loop()
        last = loop.time()
        try:
            while count is None or printed < count:
                try:
                    raise_if_cancelled()  # 3.11's wait_for may have swallowed a cancel
                    msg = await sub.next_msg(timeout=1.0)
                except (NatsTimeoutError, TimeoutError):
                    if idle_timeout_s is not None and loop.time() - last > idle_timeout_s:
                        break
                    continue
                last = loop.time()
                try:
                    line = format_event(decode_event(msg.data))
                except DecodeError as exc:
                    seq = msg.metadata.sequence.stream
                    console.print(
                        f"[red]seq {seq} on {escape(msg.subject)} is not a valid event: "
                        f"{escape(exc.reason)}[/]"
                    )
                    continue
                console.print(escape(line), highlight=False, soft_wrap=True)
                printed += 1
        finally:
            await sub.unsubscribe()
        return printed
