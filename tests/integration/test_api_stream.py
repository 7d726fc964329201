"""``GET /api/v1/stream`` over a real HTTP server: the frames, resuming, and its refusals.

The facade is the HTTP tests' fake (``test_api.FakeFacade``) with a real ``LiveFeed``: the test
folds events into the feed as the state projection would; a real orchestrator's stream is
covered by the console's browser tests and ``tests/system/test_stream_resume.py``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from tandem.events.catalog import HeartbeatLost
from tandem.events.catalog.roles import HeartbeatLostPayload
from tandem.orchestrator.api.app import create_app
from tandem.orchestrator.api.auth import load_tokens
from tandem.orchestrator.api.server import RunningServer, start_server
from tandem.orchestrator.live_feed import LiveFeed

from .test_api import TOKENS, VIEWER, FakeFacade

pytestmark = pytest.mark.timeout(60)

AUTH = {"Authorization": f"Bearer {VIEWER}"}


@dataclass
class Frame:
    event: str
    data: str
    id: int | None = None

    def json(self) -> dict[str, object]:
        return json.loads(self.data)  # type: ignore[no-any-return]


def lost(cluster: str, node: str) -> HeartbeatLost:
    payload = HeartbeatLostPayload(peer="peer", last_seen_at=None, reason="silent")
    return HeartbeatLost(cluster=cluster, node=node, epoch=1, payload=payload)


class Reader:
    """The frames of one open stream, read as they come."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.aiter_lines()
        self.comments: list[str] = []

    async def next(self) -> Frame:
        fields: dict[str, str] = {}
        while True:
            line = await asyncio.wait_for(anext(self.lines), timeout=20)
            if line == "":
                if "event" in fields:
                    seq = fields.get("id")
                    return Frame(fields["event"], fields.get("data", ""), int(seq) if seq else None)
                continue
            if line.startswith(":"):
                self.comments.append(line)
                continue
            name, _, value = line.partition(": ")
            fields[name] = value


@pytest.fixture
def facade() -> FakeFacade:
    return FakeFacade(live=LiveFeed(keep=4))


@pytest.fixture
async def server(facade: FakeFacade) -> AsyncIterator[RunningServer]:
    running = await start_server(create_app(facade, load_tokens(None, TOKENS)), "127.0.0.1", 0)
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def client(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url, timeout=30, trust_env=False) as c:
        yield c


async def test_new_events_come_live_each_followed_by_the_view_of_its_cluster(
    facade: FakeFacade, client: httpx.AsyncClient
) -> None:
    facade.live.folded(41, lost("alpha", "a1"))  # before the client came: not sent
    async with client.stream("GET", "/api/v1/stream", headers=AUTH) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        reader = Reader(response)
        hello = await reader.next()
        assert hello.event == "hello" and hello.json() == {"position": 41}
        facade.live.folded(42, lost("alpha", "a2"))
        event = await reader.next()
        assert (event.event, event.id) == ("event", 42)
        assert event.json()["node"] == "a2" and event.json()["type"] == "HeartbeatLost"
        view = await reader.next()
        assert view.event == "cluster" and view.json()["name"] == "alpha"
        # An event of a cluster the orchestrator does not know has no view to send.
        facade.live.folded(43, lost("tandem", "notifier"))
        facade.live.folded(44, lost("beta", "b1"))
        frames = [await reader.next() for _ in range(3)]
        assert [(f.event, f.id) for f in frames] == [
            ("event", 43),
            ("event", 44),
            ("cluster", None),
        ]
        assert frames[2].json()["name"] == "beta"


async def test_a_client_resumes_after_the_last_event_it_saw_from_the_feed(
    facade: FakeFacade, client: httpx.AsyncClient
) -> None:
    for seq in (1, 2, 3):
        facade.live.folded(seq, lost("alpha", f"n{seq}"))
    headers = {**AUTH, "Last-Event-ID": "1"}
    async with client.stream("GET", "/api/v1/stream", headers=headers) as response:
        reader = Reader(response)
        assert (await reader.next()).event == "hello"
        ids = [(await reader.next()).id for _ in range(2)]
        assert ids == [2, 3]
        assert (await reader.next()).event == "cluster"
    assert facade.event_queries == []  # all of it was still in the feed


async def test_a_client_further_behind_than_the_feed_keeps_reads_the_rest_from_the_stream(
    facade: FakeFacade, client: httpx.AsyncClient
) -> None:
    # The feed keeps 4: events 1..5 of the fake's stream were folded, then 6..9.
    for seq in range(1, 10):
        facade.live.folded(seq, lost("alpha" if seq % 2 else "beta", "x"))
    async with client.stream("GET", "/api/v1/stream?after=2", headers=AUTH) as response:
        reader = Reader(response)
        assert (await reader.next()).event == "hello"
        ids = []
        while len(ids) < 7:
            frame = await reader.next()
            if frame.event == "event":
                ids.append(frame.id)
        # 3..5 from the stream (the fake holds 1..5), 6..9 from the feed: none twice, none lost.
        assert ids == [3, 4, 5, 6, 7, 8, 9]
    assert facade.event_queries[0] == (None, 2, 500)


async def test_a_cluster_filter_sends_only_that_clusters_events(
    facade: FakeFacade, client: httpx.AsyncClient
) -> None:
    async with client.stream("GET", "/api/v1/stream?cluster=beta", headers=AUTH) as response:
        reader = Reader(response)
        assert (await reader.next()).event == "hello"
        facade.live.folded(10, lost("alpha", "a1"))
        facade.live.folded(11, lost("beta", "b1"))
        frame = await reader.next()
        assert (frame.event, frame.id) == ("event", 11)


async def test_a_client_too_slow_to_keep_up_is_ended_and_can_resume(
    facade: FakeFacade, client: httpx.AsyncClient
) -> None:
    facade.live = LiveFeed(keep=4, client_queue=2)
    async with client.stream("GET", "/api/v1/stream", headers=AUTH) as response:
        reader = Reader(response)
        assert (await reader.next()).event == "hello"
        for seq in range(1, 6):  # more than its queue holds, at once
            facade.live.folded(seq, lost("alpha", "a1"))
        with pytest.raises(StopAsyncIteration):
            while True:
                await reader.next()


async def test_the_stream_needs_a_token_and_a_numeric_last_event_id(
    client: httpx.AsyncClient,
) -> None:
    assert (await client.get("/api/v1/stream")).status_code == 401
    bad = await client.get("/api/v1/stream", headers={**AUTH, "Last-Event-ID": "x7"})
    assert bad.status_code == 422 and "Last-Event-ID" in bad.json()["detail"]
    assert (await client.get("/api/v1/stream?after=-1", headers=AUTH)).status_code == 422


async def test_whoami_names_the_role_of_the_token(client: httpx.AsyncClient) -> None:
    answer = await client.get("/api/v1/whoami", headers=AUTH)
    assert answer.status_code == 200 and answer.json()["role"] == "viewer"
    assert answer.json()["actor"].startswith("viewer:")
    assert (await client.get("/api/v1/whoami")).status_code == 401


def test_the_feed_knows_when_it_no_longer_keeps_what_follows_a_seq() -> None:
    feed = LiveFeed(keep=3)
    assert feed.recent_after(0) == []
    for seq in (2, 5, 6):  # gaps: events this process never folded
        feed.folded(seq, lost("alpha", "a1"))
    assert [f.seq for f in feed.recent_after(0) or []] == [2, 5, 6]
    feed.folded(9, lost("alpha", "a1"))  # 2 is dropped
    assert feed.recent_after(1) is None
    assert [f.seq for f in feed.recent_after(2) or []] == [5, 6, 9]
    started_late = LiveFeed(start=100)
    assert started_late.recent_after(50) is None and started_late.recent_after(100) == []


async def test_a_stopping_server_ends_its_streams_cleanly(
    facade: FakeFacade, server: RunningServer, client: httpx.AsyncClient
) -> None:
    """Ended by the stream itself (a complete response), not cut when the grace runs out."""
    async with client.stream("GET", "/api/v1/stream", headers=AUTH) as response:
        reader = Reader(response)
        assert (await reader.next()).event == "hello"
        stopping = asyncio.create_task(server.stop())
        with pytest.raises(StopAsyncIteration):
            await reader.next()
    await stopping


def test_a_clusters_view_is_made_once_for_all_clients_until_an_event_of_it_is_folded() -> None:
    feed = LiveFeed()
    made: list[str] = []

    def make(text: str) -> bytes:
        made.append(text)
        return text.encode()

    assert feed.view_frame("alpha", lambda: make("first")) == b"first"
    assert feed.view_frame("alpha", lambda: make("again")) == b"first"  # another client
    feed.folded(1, lost("beta", "b1"))  # another cluster's event changes nothing of alpha
    assert feed.view_frame("alpha", lambda: make("again")) == b"first"
    feed.folded(2, lost("alpha", "a1"))
    assert feed.view_frame("alpha", lambda: make("after")) == b"after"
    assert made == ["first", "after"]
