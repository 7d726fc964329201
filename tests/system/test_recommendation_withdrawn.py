"""A pending decision expires (issue 16 item 7): in managed mode the orchestrator
recommends a failover of an Active whose agent died; when that agent is back (restarted, as
its supervisor would) the recommendation is
withdrawn with a reason (an event), and an operator confirming it afterwards gets 409 saying
so, instead of failing over a healthy node. Real agents, orchestrator and nats-server."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_rig import EventRecorder
from helpers import eventually
from orchestrator_rig import Pair, cluster_view, start_pair
from tandem.events.bus import Bus
from tandem.events.embedded import NatsServer, free_port

pytestmark = pytest.mark.system


@pytest.fixture
def pair(nats_server: NatsServer, tmp_path: Path) -> Iterator[Pair]:
    p = Pair(cluster="withdrawn", tmp=tmp_path, bus_url=nats_server.url, public_port=free_port())
    yield p
    p.stop_all()


@pytest.mark.timeout(240)
async def test_a_recommendation_is_withdrawn_when_the_active_returns(bus: Bus, pair: Pair) -> None:
    rec = await EventRecorder().start(bus, pair.cluster)
    await start_pair(pair, '\n[failover]\nmode = "managed"\n')
    agent = pair.agents["primary"]
    agent.proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
    agent.proc.wait(10)  # type: ignore[union-attr]
    await eventually(lambda: rec.of("FailoverRecommended"), 60, "a failover recommended")
    agent.start()  # its supervisor restarts it: the record still names it Active
    await eventually(
        lambda: rec.of("FailoverRecommendationWithdrawn"), 60, "the recommendation withdrawn"
    )
    [withdrawn] = rec.of("FailoverRecommendationWithdrawn")
    assert withdrawn.payload.failed_node == "primary"  # type: ignore[attr-defined]
    assert "primary is back" in withdrawn.payload.reason  # type: ignore[attr-defined]
    view = await cluster_view(pair)
    assert view["pending_failover"] is None
    async with pair.api() as api:
        answer = await api.post(f"/api/v1/clusters/{pair.cluster}/failover", json={"confirm": True})
    assert answer.status_code == 409, answer.text
    assert "the failover recommendation was withdrawn (primary is back" in answer.text
    assert not rec.of("SagaStarted")  # nothing moved
    assert view["active"] == "primary"
    await rec.stop()
