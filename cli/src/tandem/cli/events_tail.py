"""``tandem events tail``: the last events, oldest first and newest last, then new ones live.

The filters (``--cluster``, ``--type``) are applied before the limits: ``--history K`` is
the last K matching events, ``--count N`` the last N matching ones (waiting for new ones
while fewer have happened), then the command exits. A type the catalog does not know is
refused, naming the close ones. ``--json``: one JSON object per line (the event as stored,
with its stream position ``seq``); ``--full``: payload values not shortened.
"""

from __future__ import annotations

import asyncio
import difflib
import json
from typing import Any

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from rich.console import Console
from rich.markup import escape

from tandem.events.bus import Bus
from tandem.events.cancel import raise_if_cancelled
from tandem.events.envelope import Event
from tandem.events.errors import DecodeError
from tandem.events.registry import EVENTS, decode_event
from tandem.events.settings import BusSettings
from tandem.events.subjects import EVENTS_ALL, EVENTS_STREAM, events_filter

#: A payload value longer than this is shortened on a line (not with ``--full``).
SHORT = 60
#: Each request to the bus while finding where the last K matching events begin.
PROBE_TIMEOUT_S = 5.0


class UnknownEventType(ValueError):
    """``--type`` names no event of the catalog."""


def known_types() -> list[str]:
    import tandem.events.catalog  # noqa: F401  (registers every event type)

    return sorted({name for name, _ in EVENTS.types})


def check_event_type(name: str) -> str:
    """``name`` if the catalog has it; else ``UnknownEventType`` naming the close ones."""
    types = known_types()
    if name in types:
        return name
    lowered = {t.lower(): t for t in types}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=4, cutoff=0.5)
    close += [t.lower() for t in types if name.lower() in t.lower() and t.lower() not in close]
    hint = ", ".join(lowered[c] for c in close[:5])
    raise UnknownEventType(
        f"unknown event type {name!r}"
        + (f": did you mean {hint}?" if hint else " (the catalog's types are CamelCase)")
    )


def format_event(event: Event, *, full: bool = False) -> str:
    """``time  cluster/node  Type  e<epoch>  key=value ...`` (payload flattened one level)."""
    when = event.occurred_at.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    payload = event.payload.model_dump(mode="json").items()
    fields = " ".join(f"{k}={v if full else _short(v)}" for k, v in payload)
    return f"{when}  {event.cluster}/{event.node}  {event.type}  e{event.epoch}  {fields}"


def json_line(event: Event, seq: int) -> str:
    return json.dumps({"seq": seq, **event.model_dump(mode="json")}, separators=(",", ":"))


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= SHORT else text[: SHORT - 3] + "..."


DEFAULT_HISTORY = 10


def window(history: int | None, count: int | None) -> int:
    """How many matching events back to start: the last ``count`` when given (never more
    than a ``history`` given too), else ``history`` (10 when not given)."""
    if count is None:
        return DEFAULT_HISTORY if history is None else history
    return count if history is None else min(history, count)


async def _pending_from(bus: Bus, subject: str, seq: int) -> int:
    """How many events matching ``subject`` the stream holds from ``seq`` on (an ephemeral
    consumer's count, which the server drops by itself right after)."""
    config = ConsumerConfig(
        deliver_policy=DeliverPolicy.BY_START_SEQUENCE,
        opt_start_seq=seq,
        filter_subject=subject,
        ack_policy=AckPolicy.NONE,
        inactive_threshold=2.0,
        mem_storage=True,
    )
    info = await bus.js.add_consumer(EVENTS_STREAM, config, timeout=PROBE_TIMEOUT_S)
    return int(info.num_pending or 0)


async def start_seq(bus: Bus, subject: str, first: int, last: int, back: int) -> int | None:
    """The stream position of the ``back``-th last event matching ``subject`` (the first
    one when fewer match); None: only new events."""
    if back <= 0 or last <= 0 or last < first:
        return None
    if subject == EVENTS_ALL:
        return max(first, last - back + 1)
    if await _pending_from(bus, subject, first) <= back:
        return first
    low, high = first, last  # pending(low) > back; find the largest s with pending(s) >= back
    while low < high:
        mid = (low + high + 1) // 2
        if await _pending_from(bus, subject, mid) >= back:
            low = mid
        else:
            high = mid - 1
    return low


async def tail(
    console: Console,
    settings: BusSettings,
    *,
    cluster: str | None,
    event_type: str | None,
    count: int | None,
    history: int | None,
    idle_timeout_s: float | None,
    as_json: bool = False,
    full: bool = False,
) -> int:
    """Print events; returns the number printed. Stops after ``count`` or when idle too long."""
    if event_type is not None:
        check_event_type(event_type)
    subject = events_filter(cluster, event_type)
    async with await Bus.connect(settings, name="tandem-events-tail") as bus:
        info = await asyncio.wait_for(bus.js.stream_info(EVENTS_STREAM), PROBE_TIMEOUT_S)
        start = await start_seq(
            bus, subject, info.state.first_seq, info.state.last_seq, window(history, count)
        )
        if start is not None:
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
                seq = msg.metadata.sequence.stream
                try:
                    event = decode_event(msg.data)
                except DecodeError as exc:
                    console.print(
                        f"[red]seq {seq} on {escape(msg.subject)} is not a valid event: "
                        f"{escape(exc.reason)}[/]"
                    )
                    continue
                line = json_line(event, seq) if as_json else format_event(event, full=full)
                console.print(line, markup=False, highlight=False, emoji=False, soft_wrap=True)
                printed += 1
        finally:
            await sub.unsubscribe()
        return printed
