"""Publishing and consuming events on a real nats-server."""

from __future__ import annotations

import asyncio

from helpers import alert, eventually
from tandem.events.bus import Bus
from tandem.events.consumer import ConsumerOptions, DurableConsumer
from tandem.events.envelope import Event
from tandem.events.subjects import EVENTS_STREAM, events_filter


async def test_publish_then_consume_round_trip(bus: Bus) -> None:
    sent = [alert(n=i) for i in range(5)]
    for event in sent:
        ack = await bus.publish(event)
        assert ack.stream == EVENTS_STREAM and not ack.duplicate

    received: list[Event] = []

    async def handle(event: Event) -> None:
        received.append(event)

    consumer = DurableConsumer(bus, ConsumerOptions(durable="round-trip"), handle)
    task = asyncio.create_task(consumer.run())
    await eventually(lambda: len(received) == 5, what="five events")
    consumer.stop()
    await asyncio.wait_for(task, 10)
    assert received == sent
    info = await bus.js.consumer_info(EVENTS_STREAM, "round-trip")
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_the_same_event_id_is_stored_once(bus: Bus) -> None:
    event = alert()
    first = await bus.publish(event)
    again = await bus.publish(event)
    assert not first.duplicate
    assert again.duplicate and again.seq == first.seq
    info = await bus.js.stream_info(EVENTS_STREAM)
    assert info.state.messages == 1


async def test_batched_publish_keeps_order_and_deduplicates(bus: Bus) -> None:
    events = [alert(n=i) for i in range(200)]
    acks = await bus.publish_many(events)
    assert [a.seq for a in acks] == list(range(1, 201))
    again = await bus.publish_many(events[:50])
    assert all(a.duplicate for a in again)
    info = await bus.js.stream_info(EVENTS_STREAM)
    assert info.state.messages == 200
    msg = await bus.js.get_msg(EVENTS_STREAM, 137)
    assert msg.data == events[136].to_json()


async def test_events_land_on_their_cluster_subject(bus: Bus) -> None:
    await bus.publish(alert(cluster="payroll"))
    await bus.publish(alert(cluster="crm"))
    sub = await bus.js.subscribe(events_filter("crm"), ordered_consumer=True)
    msg = await sub.next_msg(timeout=5)
    assert msg.subject == "tandem.evt.crm.AlertRaised"
    assert msg.headers is not None and msg.headers["Tandem-Type"] == "AlertRaised"
    await sub.unsubscribe()


async def test_a_durable_consumer_resumes_where_it_acked(bus: Bus) -> None:
    seen: list[str] = []

    async def handle(event: Event) -> None:
        seen.append(event.id)

    await bus.publish_many([alert(n=i) for i in range(3)])
    first = DurableConsumer(bus, ConsumerOptions(durable="resumer"), handle)
    task = asyncio.create_task(first.run())
    await eventually(lambda: len(seen) == 3, what="first three")
    first.stop()
    await asyncio.wait_for(task, 10)

    later = [alert(n=i) for i in range(3, 5)]
    await bus.publish_many(later)
    second = DurableConsumer(bus, ConsumerOptions(durable="resumer"), handle)
    task = asyncio.create_task(second.run())
    await eventually(lambda: len(seen) == 5, what="the two new events")
    second.stop()
    await asyncio.wait_for(task, 10)
    assert seen[3:] == [e.id for e in later]
    assert len(set(seen)) == 5
