"""Previews of a switchover and a failover (issue 20 item 5: "a dry run the API answers")
against real agents, a real orchestrator and nats-server: the verdict, target and steps the
request itself would get, and nothing started. A preview whose target is gone says why, in
the words of the refusal the request gets."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from conftest import reset_bus
from helpers import eventually
from orchestrator_rig import VIEWER, Pair, cluster_view, start_pair
from tandem.events.bus import Bus
from tandem.events.embedded import NatsServer, free_port
from tandem.events.settings import load_bus_settings, load_stream_settings

pytestmark = [pytest.mark.system, pytest.mark.timeout(180)]

CLUSTER = "previewed"


@pytest.fixture
def pair(nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    p = Pair(
        cluster=CLUSTER,
        tmp=tmp_path_factory.mktemp("previews"),
        bus_url=nats_server.url,
        public_port=free_port(),
    )
    try:
        yield p
    finally:
        p.stop_all()


async def test_a_preview_shows_what_the_request_would_do_and_starts_nothing(pair: Pair) -> None:
    async with await Bus.connect(load_bus_settings(servers=[pair.bus_url]), name="test") as bus:
        await reset_bus(bus)
        await bus.provision(load_stream_settings())
    await start_pair(pair)
    base = f"/api/v1/clusters/{CLUSTER}"
    async with pair.api(token=VIEWER) as api:
        answer = await api.get(f"{base}/switchover/preview")
        assert answer.status_code == 200, answer.text
        preview = answer.json()
        assert preview["allowed"] is True and preview["refusal"] == ""
        assert (preview["from_node"], preview["to_node"]) == ("primary", "secondary")
        steps = [(s["name"], s["node"]) for s in preview["steps"]]
        assert steps[0] == ("stop applications", "primary")
        assert steps[-1] == ("start applications", "secondary")
        assert [s["name"] for s in preview["steps"] if s["pivot"]] == ["change role"]
        # The Active is alive: a failover would be refused, and the preview says so.
        failover = (await api.get(f"{base}/failover/preview")).json()
        assert failover["allowed"] is False and "use a switchover" in failover["refusal"]
        assert (await api.get("/api/v1/clusters/nosuch/switchover/preview")).status_code == 404
        bad = await api.get(f"{base}/switchover/preview?to=not a node!")
        assert bad.status_code == 422
        assert (await api.get(f"{base}/switchover/preview?to=primary")).json()["allowed"] is False
        # Nothing started: no saga, the same Active.
        assert (await api.get(f"/api/v1/sagas?cluster={CLUSTER}")).json() == []
    view = await cluster_view(pair)
    assert view["active"] == "primary" and view["saga"] is None
    # The target goes away: the preview says why, as the switchover itself would answer.
    await asyncio.to_thread(pair.agents["secondary"].stop)

    async def refused() -> bool:
        async with pair.api(token=VIEWER) as api:
            return not (await api.get(f"{base}/switchover/preview")).json()["allowed"]

    await eventually(refused, timeout=60, what="the preview to refuse")
    async with pair.api(token=VIEWER) as api:
        preview = (await api.get(f"{base}/switchover/preview")).json()
        asked = await pair_switchover(pair)
    assert asked.status_code == 409 and asked.json()["detail"] == preview["refusal"]


async def pair_switchover(pair: Pair) -> httpx.Response:
    async with pair.api() as api:  # the operator's token
        return await api.post(f"/api/v1/clusters/{CLUSTER}/switchover", json={"reason": "test"})
