"""The node agent as a real process against a real nats-server: local repair by rules,
escalation to a switchover request, failure detection of a SIGKILLed peer, self-fencing of
an Active frozen past its lease (SIGSTOP), network isolation, and the step commands."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_rig import (
    AgentProcess,
    EventRecorder,
    demo_app_toml,
    node_toml,
    process_alive,
    read_pid,
    write_agent,
)
from helpers import eventually
from tandem.events.bus import Bus
from tandem.events.catalog import (
    ApplyReceiveQueue,
    DrainSendQueue,
    Ping,
    StartIntercepting,
)
from tandem.events.catalog.commands import PingPayload, StepPayload
from tandem.events.embedded import NatsServer, free_port
from tandem.events.envelope import Event
from tandem.events.rpc import send_command

pytestmark = pytest.mark.system


@pytest.fixture
def agents() -> Iterator[list[AgentProcess]]:
    started: list[AgentProcess] = []
    yield started
    for agent in started:
        code = agent.stop()
        assert code is not None


def demo_app(tmp: Path, port: int) -> str:
    return demo_app_toml(tmp / "data", port)


async def test_restart_rule_repairs_the_app_then_repeated_failure_requests_a_switchover(
    bus: Bus, nats_server: NatsServer, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    port = free_port()
    rule = """
[[rules]]
name = "web-down"
check = "web-http"
metric = "up"
comparator = "=="
threshold = 0
consecutive = 2
recover_s = 600
actions = [{ do = "restart", tries = 2, delay_s = 0.1 }, { do = "switchover" }]
"""
    toml = node_toml("rules", "n1", tmp_path / "state", nats_server.url)
    agent = write_agent(tmp_path, "n1", toml + demo_app(tmp_path, port) + rule)
    rec = await EventRecorder().start(bus, "rules")
    agents.append(agent.start())
    pid_file = tmp_path / "state" / "apps" / "web.pid"
    await eventually(lambda: rec.of("HealthChanged", plugin="web-http", status="ok"), 30, "web up")

    for kill in range(1, 4):
        pid = read_pid(pid_file)
        assert process_alive(pid), agent.tail()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        if kill < 3:
            await eventually(
                lambda k=kill: rec.of("ApplicationRestarted", attempt=k, ok=True),
                30,
                f"restart {kill}",
            )
            await eventually(
                lambda p=pid: process_alive(read_pid(pid_file)) and read_pid(pid_file) != p,
                30,
                "the app back with a new pid",
            )
            await eventually(
                lambda k=kill: len(rec.of("HealthChanged", plugin="web-http", status="ok")) > k,
                30,
                "health ok again",
            )
    await eventually(lambda: rec.of("SwitchoverRequested"), 30, "a switchover request")
    request = rec.of("SwitchoverRequested")[0]
    assert request.payload.rule == "web-down"  # type: ignore[attr-defined]
    assert request.payload.automatic  # type: ignore[attr-defined]
    assert request.payload.samples  # type: ignore[attr-defined]
    assert "web-down" in request.payload.reason  # type: ignore[attr-defined]
    # Two restarts, then the ladder's last rung; no third restart.
    assert len(rec.of("ApplicationRestarted")) == 2
    await rec.stop()


async def test_a_sigkilled_peer_is_reported_lost_and_restored(
    bus: Bus, nats_server: NatsServer, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    rec = await EventRecorder().start(bus, "hb")
    a = write_agent(
        tmp_path,
        "a",
        node_toml("hb", "a", tmp_path / "a" / "state", nats_server.url, peers=["b"]),
    )
    b_toml = node_toml(
        "hb", "b", tmp_path / "b" / "state", nats_server.url, peers=["a"], identity="secondary"
    )
    b = write_agent(tmp_path, "b", b_toml)
    agents += [a.start(), b.start()]
    await eventually(lambda: len(rec.of("ServiceStarted", service="monitor")) == 2, 30, "monitors")
    heard = await bus.nc.subscribe("tandem.hb.hb.b")
    await heard.next_msg(timeout=30)  # b beats: a hears it too
    await heard.unsubscribe()
    b.proc.kill()  # type: ignore[union-attr]
    b.proc.wait(10)  # type: ignore[union-attr]

    def lost_after_heard() -> list[Event]:
        return [
            e
            for e in rec.of("HeartbeatLost", peer="b")
            if e.node == "a" and e.payload.last_seen_at is not None  # type: ignore[attr-defined]
        ]

    await eventually(lost_after_heard, 30, "b reported lost")
    assert "timeout" in lost_after_heard()[0].payload.reason  # type: ignore[attr-defined]
    b.proc = None
    agents.append(b.start())
    await eventually(lambda: rec.of("HeartbeatRestored", peer="b"), 30, "b restored")
    await rec.stop()


async def test_a_frozen_active_is_hidden_by_its_guard_and_unfences_when_it_runs_again(
    bus: Bus, nats_server: NatsServer, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    """While the agent is frozen its guard hides the node and kills the application; once it
    runs again, alone in its cluster, the record still names it and no saga moved it: it
    records the fence and serves again (nobody else would)."""
    port = free_port()
    state = tmp_path / "state"
    agent = write_agent(
        tmp_path, "n1", node_toml("fence", "n1", state, nats_server.url) + demo_app(tmp_path, port)
    )
    rec = await EventRecorder().start(bus, "fence")
    agents.append(agent.start())
    identity = state / "identity.json"
    await eventually(lambda: rec.of("NodeRoleAssumed", role="active"), 30, "n1 Active")
    app_pid = read_pid(state / "apps" / "web.pid")
    assert process_alive(app_pid) and identity.exists()

    agent.signal(signal.SIGSTOP)
    try:
        # Nothing runs in the agent now: only the guard can hide the node.
        await eventually(lambda: not process_alive(app_pid), 30, "the guard kills the app")
        assert not identity.exists()
    finally:
        agent.signal(signal.SIGCONT)

    await eventually(lambda: rec.of("NodeSelfFenced"), 30, "NodeSelfFenced")
    fenced = rec.of("NodeSelfFenced")[0]
    assert fenced.payload.by == "guard"  # type: ignore[attr-defined]
    assert "deadline passed" in fenced.payload.reason  # type: ignore[attr-defined]
    actions = fenced.payload.actions  # type: ignore[attr-defined]
    assert actions[0].startswith("guard: marked the loopback identity hidden")
    assert any("killed process group" in a for a in actions)

    await eventually(lambda: rec.of("NodeUnfenced"), 30, "NodeUnfenced")
    unfenced = rec.of("NodeUnfenced")[0]
    assert "lease is held again" in unfenced.payload.reason  # type: ignore[attr-defined]
    await eventually(identity.exists, 30, "exposed again")
    new_pid = read_pid(state / "apps" / "web.pid")
    assert new_pid != app_pid and process_alive(new_pid)
    await rec.stop()


async def test_all_network_targets_failing_isolates_the_node_and_the_active_asks_to_move(
    bus: Bus, nats_server: NatsServer, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    closed = [free_port() for _ in range(3)]  # bound once, then released: nothing listens
    targets = ", ".join(f'{{ kind = "tcp", host = "127.0.0.1", port = {p} }}' for p in closed)
    network = f"\n[network]\ninterval_s = 0.3\ntimeout_s = 0.5\ntargets = [{targets}]\n"
    agent = write_agent(
        tmp_path, "n1", node_toml("net", "n1", tmp_path / "state", nats_server.url) + network
    )
    rec = await EventRecorder().start(bus, "net")
    agents.append(agent.start())
    await eventually(lambda: rec.of("NetworkIsolated"), 30, "NetworkIsolated")
    isolated = rec.of("NetworkIsolated")[0]
    for port in closed:
        assert f"tcp:127.0.0.1:{port}" in isolated.payload.unreachable  # type: ignore[attr-defined]
    await eventually(lambda: rec.of("SwitchoverRequested"), 30, "switchover request")
    assert "cut off" in rec.of("SwitchoverRequested")[0].payload.reason  # type: ignore[attr-defined]
    await rec.stop()


async def test_replication_steps_answer_on_a_pair(
    bus: Bus, nats_server: NatsServer, tmp_path: Path, agents: list[AgentProcess]
) -> None:
    roots = {n: tmp_path / n / "data" for n in ("p", "s")}
    for r in roots.values():
        r.mkdir(parents=True)
    p = write_agent(
        tmp_path,
        "p",
        node_toml(
            "steps",
            "p",
            tmp_path / "p" / "state",
            nats_server.url,
            peers=["s"],
            protected_root=roots["p"],
        ),
    )
    s = write_agent(
        tmp_path,
        "s",
        node_toml(
            "steps",
            "s",
            tmp_path / "s" / "state",
            nats_server.url,
            identity="secondary",
            peers=["p"],
            protected_root=roots["s"],
            initial_role="passive",
        ),
    )
    rec = await EventRecorder().start(bus, "steps")
    agents += [p.start()]
    await eventually(lambda: rec.of("ReplicationStarted", side="source"), 30, "source")
    agents += [s.start()]
    await eventually(lambda: rec.of("ReplicationStarted", side="target"), 30, "target")
    ping = await send_command(
        bus, Ping(cluster="steps", node="s", epoch=1, payload=PingPayload()), timeout=10
    )
    assert ping.ok and "passive" in ping.reason, ping.reason
    (roots["p"] / "a.txt").write_text("hello")
    drained = await send_command(
        bus, DrainSendQueue(cluster="steps", node="p", epoch=1, payload=StepPayload()), timeout=40
    )
    assert drained.ok, drained.reason
    applied = await send_command(
        bus,
        ApplyReceiveQueue(cluster="steps", node="s", epoch=1, payload=StepPayload()),
        timeout=40,
    )
    assert applied.ok, applied.reason
    refused = await send_command(
        bus,
        StartIntercepting(cluster="steps", node="s", epoch=1, payload=StepPayload()),
        timeout=40,
    )
    assert not refused.ok and "names p at epoch 1 Active" in refused.reason
    await eventually(lambda: rec.of("CommandExecuted", command_type="DrainSendQueue"), 10, "rec")
    await rec.stop()
