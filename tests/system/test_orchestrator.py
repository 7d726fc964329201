"""The orchestrator with real node agents, the demo app and a real nats-server: managed
switchover through the REST API, automatic failover after SIGKILL of the Active, no failover
to an isolated Passive, a frozen old Active that wakes up hidden and fenced off by the epoch,
an orchestrator killed in the middle of a saga, and a second replica taking over."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_rig import EventRecorder, read_pid
from helpers import eventually
from orchestrator_rig import (
    Pair,
    api_up,
    both_nodes_ready,
    cluster_view,
    leader_ready,
    public_get,
    public_put,
    start_pair,
    wait_saga,
)
from status_trail import StatusTrail, after_loss
from tandem.events.bus import Bus
from tandem.events.catalog import Ping
from tandem.events.catalog.commands import PingPayload
from tandem.events.embedded import NatsServer, free_port
from tandem.events.roles import read_role
from tandem.events.rpc import send_command
from tandem.events.subjects import ROLES_BUCKET

pytestmark = pytest.mark.system


@pytest.fixture
def pair(nats_server: NatsServer, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Pair]:
    name = request.node.name.removeprefix("test_").replace("_", "-")[:40].strip("-")
    p = Pair(cluster=name, tmp=tmp_path, bus_url=nats_server.url, public_port=free_port())
    yield p
    p.stop_all()


def _answers(pair: Pair):  # type: ignore[no-untyped-def]
    """A client's view: the demo app answers /health through the public port."""
    port = pair.public_port
    assert port is not None

    async def probe() -> bool:
        got = await public_get(port, "/health")
        return got is not None and got.status_code == 200

    return probe


def _kill_app(pair: Pair, node: str) -> None:
    pid = read_pid(pair.tmp / node / "state" / "apps" / "web.pid")
    if pid is not None:
        import os

        os.kill(pid, signal.SIGKILL)


def _lose_node(pair: Pair, node: str) -> None:
    """The node is gone: its agent and its application are killed without a word."""
    pair.agents[node].proc.kill()  # type: ignore[union-attr]
    _kill_app(pair, node)


async def test_managed_switchover_moves_the_app_with_its_data(bus: Bus, pair: Pair) -> None:
    await start_pair(pair)
    assert pair.public_port is not None
    stored = await public_put(pair.public_port, "/items/before", b"written on primary")
    assert stored.status_code == 200, stored.text

    async with pair.api() as api:
        answer = await api.post(
            f"/api/v1/clusters/{pair.cluster}/switchover", json={"to": "secondary"}
        )
    assert answer.status_code == 202, answer.text
    saga = await wait_saga(pair, answer.json()["saga_id"])
    assert saga["state"] == "completed", saga
    assert [s["state"] for s in saga["steps"]] == ["completed"] * len(saga["steps"])

    record, _ = await read_role(await bus.kv(ROLES_BUCKET), pair.cluster)
    assert record is not None and record.active == "secondary" and record.epoch == 2
    view = await cluster_view(pair)
    assert view["active"] == "secondary" and view["epoch"] == 2

    async def served_by_secondary() -> bool:
        answer = await public_get(pair.public_port or 0, "/items/before")
        return answer is not None and answer.status_code == 200

    await eventually(served_by_secondary, 30, "the app on the new Active")
    got = await public_get(pair.public_port, "/items/before")
    assert got is not None and got.content == b"written on primary"
    assert (pair.data("secondary") / "before").read_bytes() == b"written on primary"


async def test_sigkill_of_the_active_fails_over_to_the_passive_with_the_data(
    bus: Bus, pair: Pair
) -> None:
    rec = await EventRecorder().start(bus, pair.cluster)
    await start_pair(pair)
    assert pair.public_port is not None
    stored = await public_put(pair.public_port, "/items/kept", b"acknowledged before the crash")
    assert stored.status_code == 200
    kept = pair.data("secondary") / "kept"

    def replicated() -> bool:
        # Asynchronous replication: what the Active acknowledged reaches the Passive after
        # the lag (the RPO); the test waits for it, then kills the Active.
        return kept.exists() and kept.read_bytes() == b"acknowledged before the crash"

    await eventually(replicated, 30, "the data replicated to the Passive")

    async with StatusTrail(pair, _answers(pair)) as trail:
        _lose_node(pair, "primary")
        await eventually(lambda: rec.of("SagaCompleted"), 60, "the failover saga to complete")
        await eventually(lambda: trail.says("secondary serves"), 30, "status: moved")
    assert after_loss(trail.seen, "secondary") == "", trail.table()
    started = rec.of("SagaStarted")[0]
    assert started.payload.kind == "failover"  # type: ignore[attr-defined]
    assert "silent" in started.payload.reason  # type: ignore[attr-defined]
    # The old Active was fenced (its lease waited out: its guard hid it) before the expose.
    steps = [e.payload.step for e in rec.of("SagaStepCompleted")]  # type: ignore[attr-defined]
    assert steps.index("fence old Active") < steps.index("expose")
    [fenced] = rec.of("SagaStepCompleted", step="fence old Active")
    assert "primary's lease silent for" in fenced.payload.result["reason"]  # type: ignore[attr-defined]
    got = await public_get(pair.public_port, "/items/kept")
    assert got is not None and got.content == b"acknowledged before the crash"
    record, _ = await read_role(await bus.kv(ROLES_BUCKET), pair.cluster)
    assert record is not None and record.active == "secondary" and record.epoch == 2
    await rec.stop()


async def test_no_failover_to_a_passive_whose_network_checks_fail(bus: Bus, pair: Pair) -> None:
    rec = await EventRecorder().start(bus, pair.cluster)
    closed = [free_port() for _ in range(3)]
    targets = ", ".join(f'{{ kind = "tcp", host = "127.0.0.1", port = {p} }}' for p in closed)
    network = f"\n[network]\ninterval_s = 0.3\ntimeout_s = 0.5\ntargets = [{targets}]\n"
    pair.add_node("primary", "primary", initial_role="active").start()
    pair.add_node("secondary", "secondary", initial_role="passive", extra=network).start()
    pair.add_orchestrator().start()
    await leader_ready(pair)
    await both_nodes_ready(pair)
    await eventually(lambda: rec.of("NetworkIsolated"), 30, "the Passive isolated")

    _lose_node(pair, "primary")

    def refused() -> bool:
        return any(
            e.payload.code == "failover.impossible"  # type: ignore[attr-defined]
            for e in rec.of("AlertRaised")
        )

    await eventually(refused, 60, "the failover to be refused")
    alerts = rec.of("AlertRaised", code="failover.impossible")
    alert = alerts[0]
    assert "isolated" in alert.payload.message  # type: ignore[attr-defined]
    assert not rec.of("SagaStarted")
    record, _ = await read_role(await bus.kv(ROLES_BUCKET), pair.cluster)
    assert record is not None and record.active == "primary" and record.epoch == 1
    await rec.stop()


async def test_a_frozen_old_active_wakes_up_hidden_and_fenced_off_by_the_epoch(
    bus: Bus, pair: Pair
) -> None:
    """Without the loopback public port: a frozen agent would keep holding that port (the
    stand-in's limit; real addresses are tested in network namespaces)."""
    rec = await EventRecorder().start(bus, pair.cluster)
    primary = pair.add_node("primary", "primary", initial_role="active", public=False).start()
    pair.add_node("secondary", "secondary", initial_role="passive", public=False).start()
    pair.add_orchestrator().start()
    await leader_ready(pair)
    await both_nodes_ready(pair)

    primary.signal(signal.SIGSTOP)
    try:
        await eventually(lambda: rec.of("SagaCompleted"), 60, "the failover while frozen")
    finally:
        primary.signal(signal.SIGCONT)
    [fenced] = rec.of("SagaStepCompleted", step="fence old Active")
    assert "its guard has hidden it" in fenced.payload.result["reason"]  # type: ignore[attr-defined]
    await eventually(lambda: rec.of("NodeSelfFenced"), 30, "the old Active to fence itself")
    assert not (pair.tmp / "primary" / "state" / "identity.json").exists()
    app_pid = read_pid(pair.tmp / "primary" / "state" / "apps" / "web.pid")
    assert app_pid is None

    stale = await send_command(
        bus, Ping(cluster=pair.cluster, node="secondary", epoch=1, payload=PingPayload())
    )
    assert not stale.ok and "stale epoch 1" in stale.reason

    # The timeline: the new Active assumed its role only after the old one had been
    # fenced off by the epoch, and it never saw the old one claim the Active role again.
    actives = [
        e
        for e in rec.of("NodeRoleAssumed")
        if e.payload.role == "active"  # type: ignore[attr-defined]
    ]
    assert [e.node for e in actives] == ["primary", "secondary"]
    assert actives[1].epoch == 2
    await rec.stop()


async def test_an_orchestrator_killed_mid_saga_is_finished_by_the_next_without_repeating_steps(
    bus: Bus, pair: Pair
) -> None:
    rec = await EventRecorder().start(bus, pair.cluster)
    slow = ["sh", "-c", "trap 'sleep 3; exit 0' TERM; while :; do sleep 0.1; done"]
    slow_stop = (
        f'\n[[applications]]\nname = "slow"\nstart = {json.dumps(slow)}\nstop_grace_s = 10\n'
    )
    pair.add_node("primary", "primary", initial_role="active", extra=slow_stop).start()
    pair.add_node("secondary", "secondary", initial_role="passive", extra=slow_stop).start()
    first = pair.add_orchestrator("orch-a").start()
    await leader_ready(pair)
    await both_nodes_ready(pair)
    async with pair.api() as api:
        answer = await api.post(f"/api/v1/clusters/{pair.cluster}/switchover", json={})
    assert answer.status_code == 202, answer.text
    saga_id = answer.json()["saga_id"]

    await eventually(lambda: rec.of("SagaStepStarted"), 30, "the first step to start")
    first.kill()  # while StopApplications waits for the slow application
    second = pair.add_orchestrator("orch-b").start()
    await leader_ready(pair, index=1)
    saga = await wait_saga(pair, saga_id, index=1)
    assert saga["state"] == "completed", saga

    executed: dict[str, int] = {}
    for e in rec.of("CommandExecuted"):
        key = e.payload.idempotency_key  # type: ignore[attr-defined]
        if key.startswith(saga_id):
            executed[key] = executed.get(key, 0) + 1
    assert executed and all(n == 1 for n in executed.values()), executed
    assert second.proc is not None and second.proc.poll() is None
    await rec.stop()


async def test_a_second_orchestrator_takes_over_leadership(bus: Bus, pair: Pair) -> None:
    pair.add_node("primary", "primary", initial_role="active").start()
    pair.add_node("secondary", "secondary", initial_role="passive").start()
    first = pair.add_orchestrator("orch-a").start()
    await leader_ready(pair)
    pair.add_orchestrator("orch-b").start()
    await both_nodes_ready(pair)
    await api_up(pair, 1)
    async with pair.api(1) as api:
        health = (await api.get("/healthz")).json()
        refused = await api.post(f"/api/v1/clusters/{pair.cluster}/switchover", json={})
    assert health["leader"] is False
    assert refused.status_code == 409 and "not the leader" in refused.json()["detail"]

    first.kill()
    await leader_ready(pair, index=1)
    async with pair.api(1) as api:
        answer = await api.post(f"/api/v1/clusters/{pair.cluster}/switchover", json={})
    assert answer.status_code == 202, answer.text
    saga = await wait_saga(pair, answer.json()["saga_id"], index=1)
    assert saga["state"] == "completed", saga


async def test_rest_refuses_bad_requests_with_the_reason(pair: Pair) -> None:
    await start_pair(pair)
    from orchestrator_rig import VIEWER

    async with pair.api(token="wrong-token-wrong-token") as api:
        assert (await api.get("/api/v1/clusters")).status_code == 401
    async with pair.api(token=VIEWER) as api:
        assert (await api.get("/api/v1/clusters")).status_code == 200
        assert (
            await api.post(f"/api/v1/clusters/{pair.cluster}/switchover", json={})
        ).status_code == 403
    async with pair.api() as api:
        unknown = await api.post(
            f"/api/v1/clusters/{pair.cluster}/switchover", json={"to": "nobody"}
        )
        assert unknown.status_code == 404 and "nobody" in unknown.json()["detail"]
        bad = await api.post(
            f"/api/v1/clusters/{pair.cluster}/switchover", json={"to": "Bad Name!"}
        )
        assert bad.status_code == 422
        itself = await api.post(
            f"/api/v1/clusters/{pair.cluster}/switchover", json={"to": "primary"}
        )
        assert itself.status_code == 409 and "already the Active" in itself.json()["detail"]
        alive = await api.post(f"/api/v1/clusters/{pair.cluster}/failover", json={"confirm": True})
        assert alive.status_code == 409 and "alive" in alive.json()["detail"]
        first = await api.post(f"/api/v1/clusters/{pair.cluster}/switchover", json={})
        assert first.status_code == 202
        second = await api.post(f"/api/v1/clusters/{pair.cluster}/switchover", json={})
        assert second.status_code == 409 and "already runs" in second.json()["detail"]
        await wait_saga(pair, first.json()["saga_id"])
    await asyncio.sleep(0)


async def test_managed_failover_waits_for_an_operator_to_confirm(bus: Bus, pair: Pair) -> None:
    rec = await EventRecorder().start(bus, pair.cluster)
    managed = '\n[failover]\nmode = "managed"\n'
    await start_pair(pair, managed)

    async with StatusTrail(pair, _answers(pair)) as trail:
        _lose_node(pair, "primary")
        await eventually(lambda: rec.of("FailoverRecommended"), 60, "a failover recommended")
        await eventually(lambda: trail.says("failover to secondary recommended"),
                         30, "status: the operator is needed")  # fmt: skip
    last = trail.seen[-1]
    assert last.service == "needs_operator" and not last.answered, trail.table()
    assert "nobody serves: primary (the Active) is not heard from" in last.reason
    recommended = rec.of("FailoverRecommended")[0]
    assert recommended.payload.failed_node == "primary"  # type: ignore[attr-defined]
    assert recommended.payload.to == "secondary"  # type: ignore[attr-defined]
    view = await cluster_view(pair)
    assert view["pending_failover"]["to"] == "secondary"
    assert not rec.of("SagaStarted")  # nothing moves without the operator

    async with pair.api() as api:
        unconfirmed = await api.post(f"/api/v1/clusters/{pair.cluster}/failover", json={})
        assert unconfirmed.status_code == 422
        answer = await api.post(f"/api/v1/clusters/{pair.cluster}/failover", json={"confirm": True})
    assert answer.status_code == 202, answer.text
    saga = await wait_saga(pair, answer.json()["saga_id"])
    assert saga["state"] == "completed" and saga["kind"] == "failover", saga
    assert [s["name"] for s in saga["steps"]][:2] == ["change role", "fence old Active"]
    assert rec.of("OperatorActionRecorded")
    await rec.stop()


async def test_a_rule_asks_for_a_switchover_and_the_old_active_is_left_for_an_operator(
    bus: Bus, pair: Pair
) -> None:
    rec = await EventRecorder().start(bus, pair.cluster)
    rule = """
[[rules]]
name = "web-down"
check = "web-http"
metric = "up"
comparator = "=="
threshold = 0
consecutive = 2
actions = [{ do = "switchover" }]
"""
    await start_pair(pair, rule)

    async with StatusTrail(pair, _answers(pair)) as trail:
        _kill_app(pair, "primary")  # the application fails; the node is fine
        await eventually(lambda: rec.of("SagaCompleted"), 60, "the automatic switchover")
        await eventually(lambda: trail.says("secondary serves"), 30, "status: moved")
    assert after_loss(trail.seen, "secondary") == "", trail.table()
    assert "primary is" in trail.seen[-1].reason, trail.table()  # not protected: says why
    started = rec.of("SagaStarted")[0]
    assert started.payload.automatic  # type: ignore[attr-defined]
    assert started.causation_id == rec.of("SwitchoverRequested")[0].id
    steps = started.payload.steps  # type: ignore[attr-defined]
    assert steps[-1] == "leave old Active stopped"
    view = await cluster_view(pair)
    nodes = {n["name"]: n for n in view["nodes"]}
    assert view["active"] == "secondary"
    assert nodes["primary"]["awaiting_operator"] is True
    await rec.stop()


async def test_the_guard_refuses_a_failover_to_a_replica_out_of_sync(bus: Bus, pair: Pair) -> None:
    """Managed mode, the Active gone: the replica's state is then published here as its
    replicator would after a gap the journal cannot fill (making a real one takes a stream
    that lost batches: covered by the replicator's own tests). With the Active gone nothing
    repairs it, and the orchestrator must refuse to fail over onto it."""
    from tandem.events.catalog import ReplicationStateChanged
    from tandem.events.catalog.replication import ReplicationStateChangedPayload
    from tandem.events.catalog.vocabulary import ReplicaState

    rec = await EventRecorder().start(bus, pair.cluster)
    managed = '\n[failover]\nmode = "managed"\n'
    await start_pair(pair, managed)
    _lose_node(pair, "primary")
    await eventually(lambda: rec.of("FailoverRecommended"), 60, "a failover recommended")
    await bus.publish(
        ReplicationStateChanged(
            cluster=pair.cluster,
            node="secondary",
            epoch=1,
            payload=ReplicationStateChangedPayload(
                target="secondary",
                state=ReplicaState.OUT_OF_SYNC,
                applied_seq=0,
                lag_ops=0,
                lag_bytes=0,
                reason="batch 1:7 is no longer in the journal",
            ),
        )
    )

    async def seen_out_of_sync() -> bool:
        nodes = {n["name"]: n for n in (await cluster_view(pair))["nodes"]}
        return bool(nodes["secondary"]["replication"] == "out_of_sync")

    await eventually(seen_out_of_sync, 30, "the orchestrator to see the replica out of sync")
    async with pair.api() as api:
        answer = await api.post(f"/api/v1/clusters/{pair.cluster}/failover", json={"confirm": True})
    assert answer.status_code == 409, answer.text
    assert "out of sync" in answer.json()["detail"]
    assert not rec.of("SagaStarted")
    await rec.stop()
