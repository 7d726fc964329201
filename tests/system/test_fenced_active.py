"""An Active that fenced itself but is alive is never left alone: here it may not unfence
(``[fencing] unfence = false``), so after the orchestrator's grace it is failed over like a
silent one, its fence step confirming it hid (its lease says passive at the new epoch).

Real agents, orchestrator and nats-server; the freeze is a SIGSTOP of the Active's agent
longer than its lease's fence time but shorter than its failover timeout, so its heartbeats
come back before anyone could call it gone. Without the loopback public port (a frozen agent
holds that port: the stand-in's limit; real addresses are tested in network namespaces)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_rig import EventRecorder
from helpers import eventually
from orchestrator_rig import Pair, both_nodes_ready, cluster_view, leader_ready
from tandem.events.bus import Bus
from tandem.events.embedded import NatsServer

pytestmark = pytest.mark.system

NO_UNFENCE = """
[failover]
timeout_s = 30

[fencing]
unfence = false
"""


@pytest.fixture
def pair(nats_server: NatsServer, tmp_path: Path) -> Iterator[Pair]:
    p = Pair(cluster="stuck-fenced", tmp=tmp_path, bus_url=nats_server.url, public_port=None)
    yield p
    p.stop_all()


async def test_an_alive_active_that_stays_fenced_is_failed_over_after_the_grace(
    bus: Bus, pair: Pair
) -> None:
    rec = await EventRecorder().start(bus, pair.cluster)
    primary = pair.add_node(
        "primary", "primary", initial_role="active", extra=NO_UNFENCE, public=False
    ).start()
    pair.add_node("secondary", "secondary", initial_role="passive", public=False).start()
    pair.add_orchestrator(extra_env={"TANDEM_ORCHESTRATOR_FENCED_GRACE_S": "2"}).start()
    await leader_ready(pair)
    await both_nodes_ready(pair)
    nodes = {n["name"]: n for n in (await cluster_view(pair))["nodes"]}
    assert nodes["primary"]["guard_deadline"] is not None  # serving: its guard is armed
    assert nodes["secondary"]["guard_deadline"] is None

    primary.signal(signal.SIGSTOP)
    try:
        # Past the guard's deadline (ttl 3 - margin 1.5/2), well short of the 30 s timeout.
        await asyncio.sleep(3.5)
    finally:
        primary.signal(signal.SIGCONT)
    await eventually(lambda: rec.of("NodeSelfFenced"), 30, "primary fenced")
    assert not rec.of("SagaStarted"), "not gone: its heartbeats came back"

    async def shown_fenced() -> bool:
        nodes = {n["name"]: n for n in (await cluster_view(pair))["nodes"]}
        node = nodes["primary"]
        return (
            node["fenced"]
            and "deadline passed" in node["fenced_reason"]
            and node["fenced_since"] is not None
            and node["guard_deadline"] is None
        )

    await eventually(shown_fenced, 10, "the API to show why and since when primary is fenced")

    await eventually(lambda: rec.of("SagaCompleted"), 60, "the failover of the fenced Active")
    [started] = rec.of("SagaStarted")
    assert "fenced itself" in started.payload.reason  # type: ignore[attr-defined]
    assert "nobody serves" in started.payload.reason  # type: ignore[attr-defined]
    [fence] = rec.of("SagaStepCompleted", step="fence old Active")
    assert "hid itself" in fence.payload.result["reason"]  # type: ignore[attr-defined]
    assert not rec.of("NodeUnfenced")
    view = await cluster_view(pair)
    assert view["active"] == "secondary"
    await rec.stop()
