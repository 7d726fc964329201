"""Heartbeats over a real nats-server: a peer's heartbeats keep it alive in the watcher, and
one that cannot be read goes to the dead-letter stream with its reason while watching goes
on."""

from __future__ import annotations

import asyncio
import contextlib

from helpers import eventually
from tandem.events.bus import Bus
from tandem.events.catalog.vocabulary import Identity
from tandem.events.envelope import Event
from tandem.events.nodeboard import NodeBoard
from tandem.events.subjects import DLQ_STREAM, heartbeat_subject
from tandem.monitor.detector import DetectorConfig
from tandem.monitor.heartbeats import HeartbeatSender
from tandem.monitor.peers import PeerWatch


async def test_an_unreadable_heartbeat_is_dead_lettered_and_watching_goes_on(bus: Bus) -> None:
    events: list[Event] = []
    watch = PeerWatch(
        bus, "hbw", "a", ["b"], 0.1, DetectorConfig(), events.append, startup_grace_s=60
    )
    sender = HeartbeatSender(bus, "hbw", "b", Identity.SECONDARY, 0.1, NodeBoard())
    tasks = [asyncio.create_task(watch.run()), asyncio.create_task(sender.run())]
    try:
        await eventually(lambda: watch.peers["b"].latest is not None, 10, "b's heartbeat")
        await bus.nc.publish(heartbeat_subject("hbw", "c"), b'{"cluster": "hbw", "seq": 0}')
        await bus.nc.flush()

        async def dead_lettered() -> bool:
            info = await bus.js.stream_info(DLQ_STREAM)
            return info.state.messages > 0

        await eventually(dead_lettered, 10, "the heartbeat in the DLQ")
        msg = await bus.js.get_last_msg(DLQ_STREAM, "tandem.dlq.CORE.heartbeats-hbw-a")
        assert msg.headers is not None
        assert "unreadable heartbeat" in msg.headers["Tandem-Dlq-Reason"]
        seen = watch.peers["b"].latest
        assert seen is not None
        await eventually(
            lambda: watch.peers["b"].latest is not None and watch.peers["b"].latest.seq > seen.seq,
            10,
            "watching to go on",
        )
        assert "c" not in watch.peers  # an unreadable heartbeat adds no peer
        assert not events  # b never fell silent
    finally:
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
