"""``GET /api/v1/stream`` of a real orchestrator (issue 20 item 2): a client that was reading
it when the orchestrator was SIGKILLed reconnects to the restarted one with the last seq it
saw and gets every event it missed, none twice, in the stream's order: what the stream sent
equals what ``GET /events`` lists. The events in between are a real agent's (its restart),
on a real pair, orchestrator and nats-server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import httpx
import pytest

from helpers import eventually
from notifier_rig import events_of
from orchestrator_rig import VIEWER, Pair, both_nodes_ready, empty_bus, leader_ready, start_pair
from tandem.events.bus import Bus
from tandem.events.embedded import NatsServer, free_port
from tandem.events.settings import load_bus_settings

pytestmark = [pytest.mark.system, pytest.mark.timeout(240)]

CLUSTER = "streamed"


@pytest.fixture
def pair(nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    p = Pair(
        cluster=CLUSTER,
        tmp=tmp_path_factory.mktemp("stream"),
        bus_url=nats_server.url,
        public_port=free_port(),
    )
    try:
        yield p
    finally:
        p.stop_all()


async def _fresh(pair: Pair) -> None:
    await empty_bus(pair.bus_url)
    await start_pair(pair)


async def read_stream(pair: Pair, after: int | None, seen: list[tuple[int, str]]) -> None:
    """Append (seq, type) of each event frame to ``seen`` until the stream ends."""
    query = "" if after is None else f"?after={after}"
    async with (
        pair.api(token=VIEWER) as api,
        api.stream("GET", f"/api/v1/stream{query}", timeout=httpx.Timeout(10, read=None)) as r,
    ):
        assert r.status_code == 200
        fields: dict[str, str] = {}
        try:
            async for line in r.aiter_lines():
                if line:
                    name, _, value = line.partition(": ")
                    fields[name] = value
                    continue
                if fields.get("event") == "event":
                    seen.append((int(fields["id"]), json.loads(fields["data"])["type"]))
                fields = {}
        except httpx.HTTPError:
            return  # the server went away mid-response (SIGKILL)


async def test_a_client_resumes_across_an_orchestrator_restart_missing_nothing(
    pair: Pair,
) -> None:
    await _fresh(pair)
    seen: list[tuple[int, str]] = []
    first = asyncio.create_task(read_stream(pair, None, seen))
    # An event while the client reads: the secondary agent restarts (its stop and start).
    secondary = pair.agents["secondary"]
    await asyncio.to_thread(secondary.stop)
    await eventually(lambda: _has(seen, "ServiceStopped"), timeout=60, what="the stop, live")
    orchestrator = pair.orchestrators[0]
    await asyncio.to_thread(orchestrator.kill)
    await asyncio.wait_for(first, timeout=30)  # the stream ended with its server
    last = seen[-1][0]
    # While nobody serves the stream, the agent starts again: events the client must not miss.
    before = await _starts(pair)
    secondary.start()
    await eventually(lambda: _more_starts(pair, before), timeout=60, what="the agent's start")
    orchestrator.start()
    await leader_ready(pair)
    await both_nodes_ready(pair)
    second = asyncio.create_task(read_stream(pair, last, seen))
    try:
        await eventually(lambda: _started_seen(seen, last), timeout=60, what="the missed events")
    finally:
        second.cancel()
    async with pair.api(token=VIEWER) as api:
        listed = (await api.get(f"/api/v1/events?after={seen[0][0] - 1}&limit=1000")).json()
    upto = seen[-1][0]
    expected = [(e["seq"], e["type"]) for e in listed if e["seq"] <= upto]
    assert seen == expected, "the stream sent every event once, in order, across the restart"


def _has(seen: list[tuple[int, str]], kind: str) -> bool:
    return any(t == kind for _, t in seen)


def _started_seen(seen: list[tuple[int, str]], last: int) -> bool:
    return any(seq > last and kind == "ServiceStarted" for seq, kind in seen)


async def _starts(pair: Pair) -> int:
    """How many ServiceStarted the secondary's agent has in the stream."""
    async with await Bus.connect(load_bus_settings(servers=[pair.bus_url]), name="test") as bus:
        events = await events_of(bus, "ServiceStarted")
    return sum(1 for e in events if e.node == "secondary" and e.payload.service == "agent")


async def _more_starts(pair: Pair, before: int) -> bool:
    return await _starts(pair) > before
