"""Bad messages go to TANDEM_DLQ with their reason; the consumer carries on."""

from __future__ import annotations

import asyncio

from helpers import alert, eventually
from tandem.events.bus import Bus
from tandem.events.consumer import ConsumerOptions, DurableConsumer
from tandem.events.envelope import Event
from tandem.events.errors import TransientError
from tandem.events.subjects import DLQ_STREAM, EVENTS_STREAM


async def dlq_messages(bus: Bus) -> list:  # type: ignore[type-arg]
    info = await bus.js.stream_info(DLQ_STREAM)
    return (
        [
            await bus.js.get_msg(DLQ_STREAM, s)
            for s in range(info.state.first_seq, info.state.last_seq + 1)
        ]
        if info.state.messages
        else []
    )


async def run_until(consumer: DurableConsumer, done, what: str) -> None:  # type: ignore[no-untyped-def]
    task = asyncio.create_task(consumer.run())
    try:
        await eventually(done, what=what)
    finally:
        consumer.stop()
        await asyncio.wait_for(task, 10)


async def test_malformed_message_is_dead_lettered_and_the_next_is_handled(bus: Bus) -> None:
    await bus.publish_raw(
        "tandem.evt.demo.AlertRaised",
        b'{"type": "AlertRaised", "version": 1, "cluster": "demo"}',
        {"Nats-Msg-Id": "garbage-1", "X-Origin": "test-suite"},
    )
    good = alert(n=2)
    await bus.publish(good)
    handled: list[Event] = []

    async def handle(event: Event) -> None:
        handled.append(event)

    consumer = DurableConsumer(bus, ConsumerOptions(durable="dlq-test"), handle)
    await run_until(consumer, lambda: handled, "the good event")
    assert handled == [good]

    [dead] = await dlq_messages(bus)
    assert dead.subject == "tandem.dlq.TANDEM_EVENTS.dlq-test"
    assert dead.data == b'{"type": "AlertRaised", "version": 1, "cluster": "demo"}'
    h = dead.headers
    assert (
        "undecodable" in h["Tandem-Dlq-Reason"] and "node: Field required" in h["Tandem-Dlq-Reason"]
    )
    assert h["Tandem-Dlq-Source-Seq"] == "1"
    assert h["Tandem-Dlq-Source-Subject"] == "tandem.evt.demo.AlertRaised"
    assert h["Tandem-Dlq-Original-Msg-Id"] == "garbage-1"
    assert h["X-Origin"] == "test-suite"
    # The bad message is settled, not left to be redelivered for ever.
    info = await bus.js.consumer_info(EVENTS_STREAM, "dlq-test")
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_unknown_type_and_not_json_are_dead_lettered_with_distinct_reasons(bus: Bus) -> None:
    await bus.publish_raw("tandem.evt.demo.Teleported", b'{"type": "Teleported", "version": 1}')
    await bus.publish_raw("tandem.evt.demo.AlertRaised", b"\x00\x01binary")
    await bus.publish(alert())
    handled: list[Event] = []

    async def handle(event: Event) -> None:
        handled.append(event)

    consumer = DurableConsumer(bus, ConsumerOptions(durable="reasons"), handle)
    await run_until(consumer, lambda: handled, "the good event")
    reasons = [m.headers["Tandem-Dlq-Reason"] for m in await dlq_messages(bus)]
    assert any("unknown event type 'Teleported'" in r for r in reasons)
    assert any("not JSON" in r for r in reasons)
    assert consumer.stats.dead_lettered == 2 and consumer.stats.handled == 1


async def test_a_handler_failure_is_dead_lettered_and_does_not_stop_the_consumer(bus: Bus) -> None:
    poison, fine = alert(code="poison"), alert(code="fine")
    await bus.publish_many([poison, fine])
    handled: list[str] = []

    async def handle(event: Event) -> None:
        if event.payload.code == "poison":  # type: ignore[attr-defined]
            raise ValueError("cannot fold this alert")
        handled.append(event.id)

    consumer = DurableConsumer(bus, ConsumerOptions(durable="poisoned"), handle)
    await run_until(consumer, lambda: handled, "the next event")
    assert handled == [fine.id]
    [dead] = await dlq_messages(bus)
    assert dead.headers["Tandem-Dlq-Reason"] == "handler failed: ValueError: cannot fold this alert"


async def test_a_transient_failure_is_retried_then_handled(bus: Bus) -> None:
    event = alert()
    await bus.publish(event)
    attempts: list[int] = []

    async def handle(e: Event) -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise TransientError("peer away")

    consumer = DurableConsumer(bus, ConsumerOptions(durable="flaky", backoff_s=(0.1,)), handle)
    await run_until(consumer, lambda: consumer.stats.handled == 1, "success on the third try")
    assert len(attempts) == 3 and consumer.stats.retried == 2
    assert await dlq_messages(bus) == []


async def test_a_transient_failure_that_never_passes_ends_in_the_dlq(bus: Bus) -> None:
    await bus.publish(alert())

    async def handle(e: Event) -> None:
        raise TransientError("peer away")

    consumer = DurableConsumer(
        bus, ConsumerOptions(durable="hopeless", max_deliver=3, backoff_s=(0.05,)), handle
    )
    await run_until(consumer, lambda: consumer.stats.dead_lettered == 1, "giving up")
    [dead] = await dlq_messages(bus)
    assert dead.headers["Tandem-Dlq-Reason"] == "gave up after 3 deliveries: peer away"
