"""What the console reads besides the views, against real agents, a real orchestrator and
nats-server (one pair for the module; the last test stops its secondary):

- the targets' lag history (issue 20 item 6: lag per target over the last hour) and the
  recovery point now against the cluster's RPO target (item 4);
- previews of a switchover and a failover (item 5: "a dry run the API answers"): the verdict,
  target and steps the request itself would get, and nothing started. A preview whose target
  is gone says why, in the words of the refusal the request gets."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from helpers import eventually
from orchestrator_rig import (
    VIEWER,
    Pair,
    both_nodes_ready,
    cluster_view,
    leader_ready,
    running_pair,
)
from tandem.events.embedded import NatsServer

pytestmark = [pytest.mark.system, pytest.mark.timeout(180)]

CLUSTER = "previewed"


@pytest.fixture(scope="module")
def pair(nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    yield from running_pair(
        nats_server.url, tmp_path_factory.mktemp("console-api"), CLUSTER, _start
    )


async def _start(pair: Pair) -> None:
    pair.add_node("primary", "primary", initial_role="active").start()
    pair.add_node("secondary", "secondary", initial_role="passive").start()
    pair.add_orchestrator(extra_env={"TANDEM_ORCHESTRATOR_LAG_SAMPLE_S": "0.5"}).start()
    await leader_ready(pair)
    await both_nodes_ready(pair)


async def test_the_lag_history_has_the_target_sampled_and_not_the_active(pair: Pair) -> None:
    async def sampled() -> bool:
        async with pair.api(token=VIEWER) as api:
            answer = await api.get(f"/api/v1/clusters/{CLUSTER}/lag?minutes=5")
        return answer.status_code == 200 and len(answer.json()["targets"].get("secondary", [])) > 2

    await eventually(sampled, timeout=60, what="samples of the target's lag")
    async with pair.api(token=VIEWER) as api:
        history = (await api.get(f"/api/v1/clusters/{CLUSTER}/lag")).json()
        assert (await api.get("/api/v1/clusters/nosuch/lag")).status_code == 404
        assert (await api.get(f"/api/v1/clusters/{CLUSTER}/lag?minutes=61")).status_code == 422
    assert list(history["targets"]) == ["secondary"] and history["every_s"] == 0.5
    points = history["targets"]["secondary"]
    assert points == sorted(points, key=lambda p: p["at"])
    assert all(p["lag_bytes"] >= 0 for p in points)
    # The recovery point now, of the target that would take over, against the default target.
    rpo = (await cluster_view(pair))["rpo"]
    assert (rpo["target_s"], rpo["by"], rpo["meeting"]) == (60, "secondary", True), rpo


async def test_a_preview_shows_what_the_request_would_do_and_starts_nothing(pair: Pair) -> None:
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
