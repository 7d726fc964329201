"""Sagas and the orchestrator's events across bus faults, on a real nats-server.

- A command that got no answer (no agent listening yet, an answer lost) is sent again with
  the same idempotency key, and the step completes with one attempt.
- Past the pivot a step that keeps failing is tried again (a new key after an answered
  failure) until the forward budget is spent; the saga then ends ``needs_operator`` with a
  ``saga.stuck`` alert and nothing undone. Before the pivot a failure still compensates.
- A saga whose orchestrator lost the leadership stops and is resumed from the stream.
- Decisions, their alerts and operator actions put while the bus is down (a dedicated
  nats-server, stopped and started again) reach the stream once it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy

from agent_rig import EventRecorder
from helpers import alert, eventually, running
from tandem.events.bus import Bus
from tandem.events.catalog import Expose, SagaCompleted, SagaFailed
from tandem.events.catalog.commands import StepPayload
from tandem.events.catalog.sagas import SagaEndedPayload
from tandem.events.embedded import NatsServer, free_port
from tandem.events.envelope import Command, CommandResult
from tandem.events.errors import CommandFailedError
from tandem.events.outbox import Outbox
from tandem.events.registry import decode_command, decode_event
from tandem.events.roles import RoleRecord
from tandem.events.rpc import CommandServer, NoAnswerError, send_command
from tandem.events.secure_bus import SecureBusFiles
from tandem.events.settings import load_bus_settings, load_stream_settings
from tandem.events.subjects import (
    EVENTS_STREAM,
    ROLES_BUCKET,
    command_subject,
    events_filter,
    role_key,
)
from tandem.orchestrator.core import Orchestrator
from tandem.orchestrator.decisions import Decisions
from tandem.orchestrator.leader import LeaderLease
from tandem.orchestrator.liveness import Liveness
from tandem.orchestrator.plans import failover_plan, switchover_plan
from tandem.orchestrator.publishing import LeadershipLost, Publisher
from tandem.orchestrator.runner import SagaRunner
from tandem.orchestrator.settings import OrchestratorFile, OrchestratorSettings
from tandem.orchestrator.state import ClusterState
from tandem.orchestrator.state_records import SagaRecord

OLD, NEW = "primary", "secondary"


@dataclass
class Node:
    """A node's commands answered by a ``CommandServer``: each command received (with its
    idempotency key), and the types answered with a failure."""

    received: list[Command] = field(default_factory=list)
    failing: set[str] = field(default_factory=set)

    async def answer(self, command: Command) -> CommandResult:
        self.received.append(command)
        ok = command.type not in self.failing
        return CommandResult(
            command_id=command.id,
            idempotency_key=command.idempotency_key,
            ok=ok,
            reason=f"{command.type} {'done' if ok else 'failed: disk full'}",
        )

    def keys(self, type_: str) -> list[str]:
        return [c.idempotency_key for c in self.received if c.type == type_]


@contextlib.asynccontextmanager
async def serving(bus: Bus, cluster: str, name: str, node: Node) -> AsyncIterator[None]:
    server = CommandServer(bus, cluster, name, node.answer, lambda: 0)
    await server.start()
    try:
        yield
    finally:
        await server.stop()


async def role_record(bus: Bus, cluster: str, active: str, epoch: int = 1) -> None:
    roles = await bus.kv(ROLES_BUCKET)
    record = RoleRecord(active=active, epoch=epoch, reason="test: first Active")
    await roles.put(role_key(cluster), record.model_dump_json().encode())


def saga_of(cluster: str, kind: str, plan: list, from_node: str | None = OLD) -> SagaRecord:  # type: ignore[type-arg]
    return SagaRecord(
        id=f"saga-{cluster}",
        kind=kind,
        cluster=cluster,
        from_node=from_node,
        to_node=NEW,
        plan=plan,
        started_at=datetime.now(UTC),
    )


def folded(rec: EventRecorder, saga: SagaRecord) -> ClusterState:
    """The orchestrator's state as the saga's events make it."""
    state = ClusterState()
    state.sagas[saga.id] = saga
    for event in rec.events:
        state.apply(event)
    return state


def runner(bus: Bus, still_leader: Callable[[], bool] = lambda: True, **kw: float) -> SagaRunner:
    return SagaRunner(bus, "orch-test", still_leader=still_leader, retry_pause_s=0.1, **kw)  # type: ignore[arg-type]


# -- send_command ---------------------------------------------------------------------------


def expose(cluster: str, key: str) -> Expose:
    return Expose(
        cluster=cluster,
        node=NEW,
        epoch=1,
        idempotency_key=key,
        payload=StepPayload(reason="test", timeout_s=5),
    )


async def test_an_answer_lost_once_is_asked_again_with_the_same_command_and_key(
    bus: Bus,
) -> None:
    cluster = "rpc-lost"
    seen: list[Command] = []

    async def drops_the_first(msg: Msg) -> None:
        command = decode_command(msg.data)
        seen.append(command)
        if len(seen) == 1:
            return  # carried out, but its answer lost (a reconnect, an election)
        result = CommandResult(
            command_id=command.id, idempotency_key=command.idempotency_key, ok=True, reason="ok"
        )
        await msg.respond(result.model_dump_json().encode())

    sub = await bus.nc.subscribe(command_subject(cluster, NEW, "Expose"), cb=drops_the_first)
    try:
        command = expose(cluster, "saga-x:5")
        result = await send_command(bus, command, timeout=0.5, retry_for_s=30)
    finally:
        await sub.unsubscribe()
    assert result.ok
    assert len(seen) == 2
    assert {c.id for c in seen} == {command.id}
    assert {c.idempotency_key for c in seen} == {"saga-x:5"}


async def test_an_answered_failure_is_not_asked_again_and_nobody_listening_ends_in_time(
    bus: Bus,
) -> None:
    cluster = "rpc-answered"
    node = Node(failing={"Expose"})
    async with serving(bus, cluster, NEW, node):
        result = await send_command(bus, expose(cluster, "k1"), timeout=1, retry_for_s=30)
    assert not result.ok and result.reason == "Expose failed: disk full"
    assert node.keys("Expose") == ["k1"]
    try:
        await send_command(bus, expose(cluster, "k2"), timeout=0.2, retry_for_s=0.5)
    except NoAnswerError as exc:
        assert "no agent is listening" in str(exc) and "sent " in str(exc)
        assert isinstance(exc, CommandFailedError)
    else:
        raise AssertionError("nobody listens: NoAnswerError expected")


# -- sagas ----------------------------------------------------------------------------------


async def test_a_step_with_no_agent_listening_yet_is_sent_again_with_its_key_and_completes(
    bus: Bus,
) -> None:
    cluster = "saga-late-agent"
    await role_record(bus, cluster, OLD)
    rec = await EventRecorder().start(bus, cluster)
    saga = saga_of(cluster, "failover", failover_plan(None, NEW, 1, timeout_s=20), None)
    node = Node()
    async with running(runner(bus).execute(saga)) as task:
        # The agent is away (restarting, its bus reconnecting) while the step starts.
        await eventually(
            lambda: rec.of("SagaStepStarted", step="apply receive queue"), 10, "the step"
        )
        await asyncio.sleep(0.5)  # a few sends find nobody listening
        async with serving(bus, cluster, NEW, node):
            reason = await asyncio.wait_for(asyncio.shield(task), 60)
    assert reason == f"failover of {cluster} to {NEW} completed"
    assert node.keys("ApplyReceiveQueue") == [f"{saga.id}:1"]
    assert len(rec.of("SagaStepStarted", step="apply receive queue")) == 1  # one attempt
    assert not rec.of("SagaStepFailed")
    assert folded(rec, saga).sagas[saga.id].state == "completed"
    await rec.stop()


async def test_a_step_failing_past_the_pivot_is_retried_then_the_saga_needs_an_operator(
    bus: Bus,
) -> None:
    cluster = "saga-stuck"
    await role_record(bus, cluster, OLD)
    rec = await EventRecorder().start(bus, cluster)
    saga = saga_of(cluster, "failover", failover_plan(None, NEW, 1, timeout_s=5), None)
    node = Node(failing={"Expose"})
    async with serving(bus, cluster, NEW, node):
        reason = await runner(bus, forward_budget_s=1.0).execute(saga)
    assert "step 2 (expose) failed after the role changed" in reason
    assert reason.endswith("the new Active needs an operator")
    keys = node.keys("Expose")
    assert len(keys) >= 2, keys  # tried again, each time under a key not yet answered
    assert keys[0] == f"{saga.id}:2" and len(set(keys)) == len(keys)
    [ended] = rec.of("SagaFailed")
    assert ended.payload.needs_operator  # type: ignore[attr-defined]
    [stuck] = rec.of("AlertRaised", code="saga.stuck")
    assert stuck.payload.details["saga"] == saga.id  # type: ignore[attr-defined]
    assert "forward budget 1s" in stuck.payload.message  # type: ignore[attr-defined]
    assert not [e for e in rec.of("SagaStepCompleted") if e.payload.result.get("compensation")]  # type: ignore[attr-defined]
    assert node.keys("StartApplications") == []  # it went no further
    assert folded(rec, saga).sagas[saga.id].state == "needs_operator"
    assert folded(rec, saga).running_saga(cluster) is None  # an operator may act
    await rec.stop()


async def test_a_step_failing_before_the_pivot_is_still_compensated(bus: Bus) -> None:
    cluster = "saga-compensated"
    await role_record(bus, cluster, OLD)
    rec = await EventRecorder().start(bus, cluster)
    saga = saga_of(cluster, "switchover", switchover_plan(OLD, NEW, 1, timeout_s=5), OLD)
    old = Node(failing={"Hide"})
    async with serving(bus, cluster, OLD, old):
        reason = await runner(bus, forward_budget_s=1.0).execute(saga)
    assert reason.startswith("step 2 (hide) failed: ")
    assert "compensated: undid stop applications" in reason
    assert old.keys("Hide") == [f"{saga.id}:2"]  # not retried before the pivot
    assert old.keys("StartApplications") == [f"{saga.id}:0:undo"]
    [ended] = rec.of("SagaFailed")
    assert not ended.payload.needs_operator  # type: ignore[attr-defined]
    assert not rec.of("AlertRaised")
    assert folded(rec, saga).sagas[saga.id].state == "failed"
    await rec.stop()


async def test_a_switchover_whose_old_active_is_gone_mid_drain_fails_without_waiting_it_out(
    bus: Bus,
) -> None:
    """The old Active stops answering (SIGSTOP, SIGKILL) while it drains: once liveness
    judges it gone the step fails and its undo is skipped, instead of both waiting out their
    deadlines (35 s each here) while the failover that would replace it is held off."""
    cluster = "saga-old-gone"
    await role_record(bus, cluster, OLD)
    rec = await EventRecorder().start(bus, cluster)
    saga = saga_of(cluster, "switchover", switchover_plan(OLD, NEW, 1, timeout_s=30), OLD)
    old = Node()
    gone: list[str] = []

    async def answer(command: Command) -> CommandResult:
        if command.type == "DrainSendQueue":
            old.received.append(command)
            gone.append(f"{OLD} silent for 2.0s: no heartbeat and no lease renewal")
            await asyncio.Event().wait()  # frozen: never answers
        return await old.answer(command)

    def why_gone(c: str, node: str) -> str:
        return gone[0] if gone and (c, node) == (cluster, OLD) else ""

    server = CommandServer(bus, cluster, OLD, answer, lambda: 0)
    await server.start()
    try:
        saga_runner = runner(bus, forward_budget_s=1.0, gone=why_gone)  # type: ignore[arg-type]
        reason = await asyncio.wait_for(saga_runner.execute(saga), 60)
    finally:
        await server.stop()
    assert reason.startswith("step 1 (drain send queue) failed: "), reason
    assert f"{OLD} is gone while waiting for DrainSendQueue" in reason
    assert "undo of stop applications failed" in reason and "not sent" in reason
    assert old.keys("StartApplications") == []  # nobody to undo it on
    [undo] = [f for f in rec.of("SagaStepFailed") if f.payload.compensating]  # type: ignore[attr-defined]
    assert "is gone" in undo.payload.reason  # type: ignore[attr-defined]
    [ended] = rec.of("SagaFailed")
    assert not ended.payload.needs_operator  # type: ignore[attr-defined]
    assert folded(rec, saga).running_saga(cluster) is None  # the failover may start
    await rec.stop()


async def test_a_saga_stopped_by_a_lost_leadership_is_resumed_where_it_was(bus: Bus) -> None:
    cluster = "saga-resumed"
    await role_record(bus, cluster, OLD)
    rec = await EventRecorder().start(bus, cluster)
    saga = saga_of(cluster, "failover", failover_plan(None, NEW, 1, timeout_s=10), None)
    leading = {"now": True}
    node = Node()

    async def answer(command: Command) -> CommandResult:
        if command.type == "Expose":
            leading["now"] = False  # the lease lapsed while the node carried it out
        return await node.answer(command)

    server = CommandServer(bus, cluster, NEW, answer, lambda: 0)
    await server.start()
    try:
        saga_runner = runner(bus, still_leader=lambda: leading["now"])
        stopped = await saga_runner.execute(saga)
        assert stopped.startswith("stopped, the next leader resumes it: ")
        await eventually(lambda: len(rec.of("SagaStepCompleted")) == 3, 10, "3 steps recorded")
        assert not rec.of("SagaCompleted") and not rec.of("SagaFailed")
        # Leader again: the saga resumes from what the stream says it did.
        leading["now"] = True
        state = folded(rec, saga)
        resumed = await saga_runner.start(state.sagas[saga.id])
    finally:
        await server.stop()
    assert resumed == f"failover of {cluster} to {NEW} completed"
    done_before = [e.payload.step for e in rec.of("SagaStepCompleted")]  # type: ignore[attr-defined]
    assert done_before.count("apply receive queue") == 1  # not run again
    assert node.keys("ApplyReceiveQueue") == [f"{saga.id}:1"]
    assert set(node.keys("Expose")) == {f"{saga.id}:2"}  # resent under its key
    assert len(rec.of("RoleChanged")) == 1
    await rec.stop()


# -- the outbox while the bus is down -------------------------------------------------------


@contextlib.asynccontextmanager
async def own_bus(tmp_path: Path, secrets: SecureBusFiles) -> AsyncIterator[tuple[NatsServer, Bus]]:
    server = NatsServer(
        store_dir=tmp_path / "nats",
        name="faulty",
        port=free_port(),
        extra_config=secrets.server_config(),
    ).start()
    bus = await Bus.connect(load_bus_settings(servers=[server.url]), name="tandem-test-faulty")
    try:
        await bus.provision(load_stream_settings())
        yield server, bus
    finally:
        await bus.close()
        server.stop()


async def stored_ids(bus: Bus, cluster: str) -> list[str]:
    sub = await bus.js.subscribe(
        events_filter(cluster),
        stream=EVENTS_STREAM,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.ALL,
    )
    ids: list[str] = []
    try:
        while True:
            try:
                msg = await sub.next_msg(timeout=1)
            except Exception:
                return ids
            ids.append(decode_event(msg.data).id)
    finally:
        await sub.unsubscribe()


async def test_decisions_and_operator_actions_put_while_the_bus_is_down_are_stored_after(
    tmp_path: Path, bus_secrets: SecureBusFiles
) -> None:
    cluster = "outbox-down"
    async with own_bus(tmp_path, bus_secrets) as (server, bus):
        settings = OrchestratorSettings(instance="orch-test")
        state = ClusterState()
        state.cluster(cluster).active = OLD  # a known cluster: its actions are filed there
        outbox = Outbox(bus)
        orchestrator = Orchestrator(
            bus,
            settings,
            OrchestratorFile(),
            state,
            Liveness(bus, default_timeout_s=1.0),
            LeaderLease(bus, "orch-test"),
            outbox=outbox,
        )
        decisions = Decisions(orchestrator)
        async with running(outbox.run()):
            server.stop()  # the bus is gone
            alerts = [alert(cluster, code="failover.impossible", n=n) for n in range(3)]
            for event in alerts:
                await decisions._emit(event)  # never blocks, never raises
            await orchestrator.record_operator_action(
                "alice", "switchover", {"cluster": cluster}, "refused: test", "api"
            )
            assert not await outbox.flush(timeout=1.0)  # nothing can be stored meanwhile
            server.start()  # the same port and store: the client reconnects by itself
            await eventually(lambda: len(outbox) == 0, 60, "the outbox to empty")
        ids = await stored_ids(bus, cluster)
    expected = [e.id for e in alerts]
    assert ids[: len(expected)] == expected  # in order, each once
    assert len(ids) == len(expected) + 1 and len(set(ids)) == len(ids)


async def test_a_saga_event_not_yet_stored_when_the_orchestrator_dies_is_stored_after_restart(
    tmp_path: Path, bus_secrets: SecureBusFiles
) -> None:
    """With a state dir, ``Publisher.stored`` writes the event to the durable outbox before it
    is first sent. An orchestrator that loses the bus (and its leadership) with a saga event
    in flight, then dies, sends it after its restart under the same id: stored once, and a
    subscriber that saw it live finds it in the stream (chaos checker (c)). An end that comes
    late never overturns the saga's first end."""
    cluster = "outbox-durable"
    folder = tmp_path / "orch-state" / "outbox"
    leading = [True]
    async with own_bus(tmp_path, bus_secrets) as (server, bus):
        first = Outbox(bus, path=folder)
        publisher = Publisher(bus, outbox=first)
        event = alert(cluster, code="saga.stuck", n=1)
        async with running(first.run()):
            server.stop()  # the bus is away while the event is in flight

            async def lose_the_lead() -> None:
                await asyncio.sleep(0.5)
                leading[0] = False

            async with running(lose_the_lead()):
                try:
                    await publisher.stored(event, keep_going=lambda: leading[0])
                except LeadershipLost as exc:
                    assert "kept in the outbox" in str(exc)
                else:
                    raise AssertionError("LeadershipLost expected")
        first.close()  # the process dies here (its queue is gone, its file stays)
        server.start()
        again = Outbox(bus, path=folder)  # the restarted orchestrator
        assert again.pending_ids() == [event.id]
        async with running(again.run()):
            await eventually(lambda: len(again) == 0, 60, "the outbox to empty")
        again.close()
        assert await stored_ids(bus, cluster) == [event.id]


def test_a_late_end_does_not_overturn_the_first() -> None:
    cluster = "late-end"
    saga = saga_of(cluster, "switchover", switchover_plan(OLD, NEW, 1, timeout_s=5), OLD)
    state = ClusterState()
    state.sagas[saga.id] = saga
    ended = SagaEndedPayload(saga_id=saga.id, reason="completed by the next leader")
    late = SagaEndedPayload(saga_id=saga.id, reason="failed, sent again after a restart")
    state.apply(SagaCompleted(cluster=cluster, node="orch-1", epoch=2, payload=ended))
    state.apply(SagaFailed(cluster=cluster, node="orch-2", epoch=2, payload=late))
    assert state.sagas[saga.id].state == "completed"
    assert state.sagas[saga.id].reason == "completed by the next leader"


async def test_a_resumed_saga_whose_role_change_is_in_the_role_record_goes_on_from_it(
    bus: Bus,
) -> None:
    """Seen in the chaos run: a leader completed a switchover, lost its leadership while
    its step events were still in its outbox (a NATS server killed), and the next leader
    resumed the saga from step 0 — StopApplications to the old Active, by then SIGKILLed,
    failed the saga that had in fact gone through. The role record already names the new
    Active at the saga's epoch: the steps before the role change are done."""
    cluster = "saga-pivot-known"
    await role_record(bus, cluster, NEW, epoch=2)  # the previous leader's role change
    rec = await EventRecorder().start(bus, cluster)
    saga = saga_of(cluster, "switchover", switchover_plan(OLD, NEW, 1, timeout_s=10), OLD)
    old, new = Node(), Node()

    def why_gone(c: str, node: str) -> str:
        return f"{OLD} silent for 11.3s" if (c, node) == (cluster, OLD) else ""

    async with serving(bus, cluster, OLD, old), serving(bus, cluster, NEW, new):
        saga_runner = runner(bus, gone=why_gone)  # type: ignore[arg-type]
        reason = await asyncio.wait_for(saga_runner.execute(saga), 60)
    assert reason.endswith("completed"), reason
    assert old.received == []  # nothing sent to the old Active again
    assert new.keys("Expose"), "the steps after the role change ran"
    [changed] = rec.of("RoleChanged")  # stored by the role change that recognised itself
    assert changed.payload.active_node == NEW  # type: ignore[attr-defined]
    assert rec.of("SagaCompleted") and not rec.of("SagaFailed")
    await rec.stop()


async def test_a_resumed_saga_that_a_later_role_change_superseded_ends_without_acting(
    bus: Bus,
) -> None:
    """Seen in the chaos run: a switchover's leader was killed after its pivot with the
    saga's start still in its outbox; the next leader, not knowing it, failed the cluster
    over (epoch 3); the switchover, resumed later, sent Expose at epoch 2 for two minutes
    ("stale epoch") and ended needing an operator. It is superseded: it ends, untouched."""
    cluster = "saga-superseded"
    await role_record(bus, cluster, OLD, epoch=3)  # the later failover's
    rec = await EventRecorder().start(bus, cluster)
    saga = saga_of(cluster, "switchover", switchover_plan(OLD, NEW, 1, timeout_s=10), OLD)
    old, new = Node(), Node()
    async with serving(bus, cluster, OLD, old), serving(bus, cluster, NEW, new):
        reason = await asyncio.wait_for(runner(bus).execute(saga), 60)
    assert reason.startswith("superseded: the role record names primary Active at epoch 3")
    assert old.received == [] and new.received == []
    [ended] = rec.of("SagaFailed")
    assert not ended.payload.needs_operator  # type: ignore[attr-defined]
    assert rec.of("AlertRaised") == []
    await rec.stop()
