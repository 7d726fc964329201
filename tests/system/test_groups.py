"""A group of three clusters (database, application server, web front: the white paper's
SQL Server + SharePoint shape) switched over together: members move in priority order and a
member starts only after the members it depends on are up on their new Active."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_rig import EventRecorder, node_toml, write_agent
from helpers import eventually
from orchestrator_rig import Pair, leader_ready, wait_saga
from tandem.events.bus import Bus
from tandem.events.embedded import NatsServer

pytestmark = pytest.mark.system

MEMBERS = ("shop-db", "shop-app", "shop-web")
GROUP = """
[[groups]]
name = "shop"
on_failure = "compensate"

[[groups.members]]
cluster = "shop-web"
priority = 2
depends_on = ["shop-app"]

[[groups.members]]
cluster = "shop-db"
priority = 0

[[groups.members]]
cluster = "shop-app"
priority = 1
depends_on = ["shop-db"]
"""


@pytest.fixture
def pair(nats_server: NatsServer, tmp_path: Path) -> Iterator[Pair]:
    p = Pair(cluster="shop-db", tmp=tmp_path, bus_url=nats_server.url, public_port=None)
    yield p
    p.stop_all()


async def start_group(bus: Bus, pair: Pair, tmp_path: Path) -> list[EventRecorder]:
    recorders = [await EventRecorder().start(bus, c) for c in (*MEMBERS, "shop")]
    for cluster in MEMBERS:
        for node, identity, role in (("a", "primary", "active"), ("b", "secondary", "passive")):
            toml = node_toml(
                cluster,
                node,
                tmp_path / cluster / node / "state",
                pair.bus_url,
                identity=identity,
                peers=["b" if node == "a" else "a"],
                initial_role=role,
            )
            agent = write_agent(tmp_path / cluster, node, toml)
            pair.agents[f"{cluster}/{node}"] = agent.start()
    config = tmp_path / "orchestrator.toml"
    config.write_text(GROUP)
    pair.add_orchestrator(extra_env={"TANDEM_ORCHESTRATOR_CONFIG": str(config)}).start()
    await leader_ready(pair)

    async def members_ready() -> bool:
        async with pair.api() as api:
            groups = (await api.get("/api/v1/groups")).json()
        if not groups:
            return False
        members = groups[0]["members"]
        return [m["cluster"] for m in members] == list(MEMBERS) and all(
            m["active"] == "a" for m in members
        )

    await eventually(members_ready, 60, "every member Active on node a")

    async def passives_alive() -> bool:
        # A switchover needs a node to move to: each member's b must be seen alive first.
        async with pair.api() as api:
            for cluster in MEMBERS:
                view = (await api.get(f"/api/v1/clusters/{cluster}")).json()
                nodes = {n["name"]: n for n in view.get("nodes", [])}
                if not (nodes.get("b") or {}).get("alive"):
                    return False
        return True

    await eventually(passives_alive, 60, "every member's node b alive")
    return recorders


async def test_a_group_switchover_moves_members_in_order_after_their_dependencies(
    bus: Bus, pair: Pair, tmp_path: Path
) -> None:
    recorders = await start_group(bus, pair, tmp_path)
    async with pair.api() as api:
        answer = await api.post("/api/v1/groups/shop/switchover", json={})
    assert answer.status_code == 202, answer.text
    saga = await wait_saga(pair, answer.json()["saga_id"], timeout=120)
    assert saga["state"] == "completed", saga
    assert [s["name"] for s in saga["steps"]] == [f"switchover {c}" for c in MEMBERS]

    # Event order across the members: each child saga starts after the previous completed.
    timeline = sorted(
        (e.occurred_at, e.type, e.cluster)
        for rec in recorders
        for e in rec.events
        if e.type in ("SagaStarted", "SagaCompleted") and e.cluster in MEMBERS
    )
    assert [(t, c) for _, t, c in timeline] == [
        ("SagaStarted", "shop-db"),
        ("SagaCompleted", "shop-db"),
        ("SagaStarted", "shop-app"),
        ("SagaCompleted", "shop-app"),
        ("SagaStarted", "shop-web"),
        ("SagaCompleted", "shop-web"),
    ]
    async with pair.api() as api:
        groups = (await api.get("/api/v1/groups")).json()
    assert all(m["active"] == "b" for m in groups[0]["members"])
    for rec in recorders:
        await rec.stop()


async def test_a_member_that_cannot_move_stops_the_group_and_the_moved_members_go_back(
    bus: Bus, pair: Pair, tmp_path: Path
) -> None:
    recorders = await start_group(bus, pair, tmp_path)
    pair.agents["shop-web/b"].stop()  # the web front's standby is gone

    async def standby_gone() -> bool:
        async with pair.api() as api:
            view = (await api.get("/api/v1/clusters/shop-web")).json()
        return not next(n for n in view["nodes"] if n["name"] == "b")["alive"]

    await eventually(standby_gone, 30, "shop-web's standby seen gone")
    async with pair.api() as api:
        answer = await api.post("/api/v1/groups/shop/switchover", json={})
    assert answer.status_code == 202, answer.text
    saga = await wait_saga(pair, answer.json()["saga_id"], timeout=180)
    assert saga["state"] == "failed", saga
    assert "shop-web" in saga["reason"] and "compensated" in saga["reason"]
    states = [s["state"] for s in saga["steps"]]
    assert states == ["compensated", "compensated", "failed"], saga["steps"]
    async with pair.api() as api:
        groups = (await api.get("/api/v1/groups")).json()
    assert all(m["active"] == "a" for m in groups[0]["members"]), groups
    for rec in recorders:
        await rec.stop()
