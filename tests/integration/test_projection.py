"""Projections: replay then follow live; redelivery changes nothing."""

from __future__ import annotations

import asyncio
import contextlib

from helpers import alert, eventually
from tandem.events.bus import Bus
from tandem.events.catalog import AlertCleared, AlertRaised
from tandem.events.catalog.alerts import AlertClearedPayload
from tandem.events.envelope import Event
from tandem.events.projection import Projection
from tandem.events.subjects import DLQ_STREAM


class OpenAlerts(Projection):
    """Which alert codes are open per cluster, and how many events were folded."""

    name = "open-alerts"

    def __init__(self, position: int = 0) -> None:
        super().__init__(position)
        self.open: dict[str, set[str]] = {}
        self.folded = 0

    def apply(self, event: Event) -> None:
        self.folded += 1
        if isinstance(event, AlertRaised):
            self.open.setdefault(event.cluster, set()).add(event.payload.code)
        elif isinstance(event, AlertCleared):
            self.open.get(event.cluster, set()).discard(event.payload.code)


def cleared(code: str, cluster: str = "demo") -> AlertCleared:
    return AlertCleared(
        cluster=cluster, node="primary", payload=AlertClearedPayload(code=code, reason="fixed")
    )


@contextlib.asynccontextmanager
async def running(projection: Projection, bus: Bus):  # type: ignore[no-untyped-def]
    task = asyncio.create_task(projection.run(bus))
    try:
        yield projection
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_projection_rebuilt_by_replay_equals_the_live_one(bus: Bus) -> None:
    await bus.publish_many(
        [alert(code="disk"), alert(code="cpu"), alert(cluster="crm", code="net")]
    )
    live = OpenAlerts()
    async with running(live, bus):
        await live.wait_caught_up()
        await bus.publish_many([cleared("cpu"), alert(code="mem"), cleared("net", "crm")])
        await eventually(lambda: live.folded == 6, what="live projection to see six events")

        # A restart: a fresh projection replays the stream from the start.
        rebuilt = OpenAlerts()
        async with running(rebuilt, bus):
            await rebuilt.wait_caught_up()
            assert rebuilt.open == live.open == {"demo": {"disk", "mem"}, "crm": set()}
            assert rebuilt.position == live.position == 6


async def test_a_projection_resumes_after_a_stored_position(bus: Bus) -> None:
    await bus.publish_many([alert(code="a"), alert(code="b"), alert(code="c")])
    resumed = OpenAlerts(position=2)
    async with running(resumed, bus):
        await resumed.wait_caught_up()
        assert resumed.folded == 1 and resumed.open == {"demo": {"c"}}


async def test_a_redelivered_message_changes_nothing(bus: Bus) -> None:
    event = alert(code="once")
    await bus.publish(event)
    projection = OpenAlerts()
    assert projection.fold(1, event)
    assert not projection.fold(1, event)
    assert projection.folded == 1 and projection.position == 1


async def test_a_malformed_event_is_dead_lettered_and_the_projection_moves_on(bus: Bus) -> None:
    await bus.publish_raw("tandem.evt.demo.AlertRaised", b'{"type": "AlertRaised"}')
    await bus.publish(alert(code="after"))
    projection = OpenAlerts()
    async with running(projection, bus):
        await projection.wait_caught_up()
        assert projection.open == {"demo": {"after"}} and projection.position == 2
    dead = await bus.js.get_msg(DLQ_STREAM, 1)
    assert dead.headers["Tandem-Dlq-Consumer"] == "open-alerts"
    assert "no valid 'version'" in dead.headers["Tandem-Dlq-Reason"]


async def test_an_empty_stream_counts_as_caught_up(bus: Bus) -> None:
    projection = OpenAlerts()
    async with running(projection, bus):
        await projection.wait_caught_up()
        assert projection.position == 0


async def test_a_projection_replaying_a_busy_stream_stops_when_cancelled(bus: Bus) -> None:
    """Python 3.11's wait_for can swallow a cancel when a message arrives at that moment; a
    replaying projection must still stop (it once ran on for ever: a service that ignored
    SIGTERM). Cancelled several times mid-replay; each run must end."""
    for batch in range(10):
        await bus.publish_many([alert(n=batch * 1000 + i) for i in range(1000)])
    for delay in (0.05, 0.2, 0.5):
        projection = OpenAlerts()
        task = asyncio.create_task(projection.run(bus))
        await asyncio.sleep(delay)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=30)
        assert done, f"the projection did not stop when cancelled after {delay}s"
        assert task.cancelled()
