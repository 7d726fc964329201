"""``ApplicationRestartRequested`` answered by real agent processes of an Active/Passive pair
running the demo application: the Active restarts it (new pid, healthy again) and records
``ApplicationRestarted``; the Passive records that it ignored the request and starts nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from nats.js.errors import NotFoundError

from agent_rig import (
    AgentProcess,
    EventRecorder,
    demo_app_toml,
    http_status,
    node_toml,
    process_alive,
    read_pid,
    write_agent,
)
from helpers import eventually
from tandem.agent.restarts import durable_name
from tandem.events.bus import Bus
from tandem.events.catalog import ApplicationRestartRequested
from tandem.events.catalog.vmware import ApplicationRestartRequestedPayload
from tandem.events.embedded import NatsServer, free_port
from tandem.events.envelope import Event
from tandem.events.subjects import EVENTS_STREAM

pytestmark = pytest.mark.system

CLUSTER = "rq"
WAIT_S = 30.0
#: The rig's lease (3 s, hide after 1.5 s unrenewed) fences an agent on a loaded host; this
#: test is about restarts, so its agents get a lease that a busy machine still renews.
RIG_LEASE = "ttl_s = 3\nrenew_every_s = 0.3\nfence_margin_s = 1.5\n"
ROOMY_LEASE = "ttl_s = 20\nrenew_every_s = 0.5\nfence_margin_s = 5\n"


@pytest.fixture
def agents() -> Iterator[list[AgentProcess]]:
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        assert agent.stop() is not None


async def healthy(port: int) -> bool:
    try:
        return await asyncio.to_thread(http_status, f"http://127.0.0.1:{port}/health") == 200
    except OSError:
        return False


def ask(node: str) -> ApplicationRestartRequested:
    payload = ApplicationRestartRequestedPayload(
        application="web", reason="after VM remediation guest_restart", requested_by="test"
    )
    return ApplicationRestartRequested(cluster=CLUSTER, node=node, payload=payload)


async def test_the_active_restarts_and_the_passive_ignores(
    bus: Bus, nats_server: NatsServer, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    rec = await EventRecorder().start(bus, CLUSTER)
    nodes = {"p": ("primary", "active"), "s": ("secondary", "passive")}
    ports = {node: free_port() for node in nodes}
    for node, (identity, role) in nodes.items():
        state = tmp_path / node / "state"
        toml = node_toml(
            CLUSTER,
            node,
            state,
            nats_server.url,
            identity=identity,
            peers=[n for n in nodes if n != node],
            initial_role=role,
        )
        assert RIG_LEASE in toml
        toml = toml.replace(RIG_LEASE, ROOMY_LEASE)
        agent = write_agent(tmp_path, node, toml + demo_app_toml(tmp_path / node, ports[node]))
        agents.append(agent.start())
    for node, (_, role) in nodes.items():
        await eventually(
            lambda n=node, r=role: any(e.node == n for e in rec.of("NodeRoleAssumed", role=r)),
            WAIT_S,
            f"{node} {role}",
        )
    await eventually(
        lambda: any(e.node == "p" for e in rec.of("HealthChanged", plugin="web-http", status="ok")),
        WAIT_S,
        "the Active's app healthy",
    )

    async def consumers_exist() -> bool:
        try:
            for node in nodes:
                await bus.js.consumer_info(EVENTS_STREAM, durable_name(CLUSTER, node))
        except NotFoundError:
            return False
        return True

    await eventually(consumers_exist, WAIT_S, "both agents reading restart requests")

    def answers(cause: Event) -> list[Event]:
        return [e for e in rec.of("ApplicationRestarted") if e.causation_id == cause.id]

    pid_file = tmp_path / "p" / "state" / "apps" / "web.pid"
    before = read_pid(pid_file)
    assert process_alive(before), agents[0].tail()
    to_active = ask("p")
    await bus.publish(to_active)
    await eventually(lambda: answers(to_active), WAIT_S, "the Active's answer")
    (done,) = answers(to_active)
    assert done.node == "p"
    assert done.payload.ok, done.payload.reason  # type: ignore[attr-defined]
    after = read_pid(pid_file)
    assert after != before and process_alive(after) and not process_alive(before)
    await eventually(lambda: healthy(ports["p"]), WAIT_S, "the restarted app healthy")

    to_passive = ask("s")
    await bus.publish(to_passive)
    await eventually(lambda: answers(to_passive), WAIT_S, "the Passive's answer")
    (ignored,) = answers(to_passive)
    assert ignored.node == "s"
    assert not ignored.payload.ok  # type: ignore[attr-defined]
    assert ignored.payload.reason.startswith("ignored: s is not the Active (plays passive)")  # type: ignore[attr-defined]
    assert read_pid(tmp_path / "s" / "state" / "apps" / "web.pid") is None
    assert not await healthy(ports["s"])
    assert len(answers(to_active)) == 1
    await rec.stop()
