"""The agent's answer to ``ApplicationRestartRequested``, over a real nats-server with the demo
application as a real process: the Active restarts the application (new pid, healthy again)
and records ``ApplicationRestarted``; a Passive, or a node with no role yet, ignores the
request; an unknown application is refused naming the known ones; a failing restart is
reported with its error; a node demoted during the restart stops the application again; a
stale request is ignored; a redelivered request is not carried out twice; a request for
another node is left alone; a malformed message goes to the dead-letter stream."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from nats.js.errors import NotFoundError

from agent_rig import EventRecorder, http_status, process_alive, read_pid
from helpers import eventually
from tandem.agent.apps import ApplicationSet
from tandem.agent.control import ApplicationConfig, AppState
from tandem.agent.restarts import RestartRequests
from tandem.events.bus import Bus
from tandem.events.catalog import ApplicationRestarted, ApplicationRestartRequested
from tandem.events.catalog.vmware import ApplicationRestartRequestedPayload
from tandem.events.catalog.vocabulary import Role
from tandem.events.embedded import free_port
from tandem.events.envelope import utcnow
from tandem.events.nodeboard import NodeBoard
from tandem.events.outbox import Outbox
from tandem.events.subjects import DLQ_STREAM, EVENTS_STREAM, event_subject

CLUSTER, NODE, EPOCH = "rr", "n1", 4
WAIT_S = 30.0
#: Notes a SIGTERM in the file named by argv[1] and keeps running (killed after the grace).
STUBBORN = (
    "import pathlib, signal, sys, time; "
    "signal.signal(signal.SIGTERM, lambda *_: pathlib.Path(sys.argv[1]).touch()); "
    "time.sleep(600)"
)


def request(
    application: str = "web", node: str = NODE, **kw: object
) -> ApplicationRestartRequested:
    return ApplicationRestartRequested(
        cluster=CLUSTER,
        node=node,
        epoch=EPOCH,
        payload=ApplicationRestartRequestedPayload(
            application=application,
            reason="after VM remediation guest_restart",
            requested_by="test",
        ),
        **kw,  # type: ignore[arg-type]
    )


@dataclass
class Node:
    bus: Bus
    apps: ApplicationSet
    board: NodeBoard
    requests: RestartRequests
    rec: EventRecorder
    port: int
    pid_file: Path

    def pid(self) -> int | None:
        return read_pid(self.pid_file)

    async def healthy(self) -> bool:
        try:
            return (
                await asyncio.to_thread(http_status, f"http://127.0.0.1:{self.port}/health") == 200
            )
        except OSError:
            return False

    async def start_web(self) -> int:
        await self.apps.start(["web"])
        await eventually(self.healthy, WAIT_S, "the demo app healthy")
        pid = self.pid()
        assert process_alive(pid)
        assert pid is not None
        return pid

    def outcomes(self, cause: ApplicationRestartRequested) -> list[ApplicationRestarted]:
        return [
            e
            for e in self.rec.events
            if isinstance(e, ApplicationRestarted) and e.causation_id == cause.id
        ]

    async def answer(self, cause: ApplicationRestartRequested) -> ApplicationRestarted:
        """Publish ``cause`` and wait for its one outcome on the bus."""
        await self.bus.publish(cause)
        await eventually(lambda: self.outcomes(cause), WAIT_S, f"the answer to {cause.id}")
        (outcome,) = self.outcomes(cause)
        assert outcome.cluster == CLUSTER and outcome.node == NODE
        assert outcome.payload.application == cause.payload.application
        return outcome

    async def settled(self) -> None:
        """Wait until the durable acknowledged everything published to its subject."""
        info = await self.bus.js.stream_info(EVENTS_STREAM)
        last = info.state.last_seq

        async def caught_up() -> bool:
            c = await self.bus.js.consumer_info(EVENTS_STREAM, self.requests.durable)
            return c.ack_floor.stream_seq >= last and c.num_ack_pending == 0

        await eventually(caught_up, WAIT_S, "the consumer to acknowledge every request")


MakeNode = Callable[[Role | None], Awaitable[Node]]


@pytest.fixture
async def make_node(bus: Bus, tmp_path: Path) -> AsyncIterator[MakeNode]:
    """A node with the demo app (``web``) and an app that cannot start (``broken``), its
    restart requests consumed from the bus and its events published through an outbox."""
    tasks: list[asyncio.Task[None]] = []
    made: list[Node] = []

    async def make(role: Role | None) -> Node:
        port = free_port()
        argv = [sys.executable, "-m", "tandem.agent.demoapp", "--data", str(tmp_path / "data")]
        web = ApplicationConfig.model_validate(
            {"name": "web", "start": [*argv, "--port", str(port)], "stop_grace_s": 5}
        )
        broken = ApplicationConfig.model_validate(
            {"name": "broken", "start": [sys.executable, "-c", "raise SystemExit(3)"]}
        )
        stubborn = ApplicationConfig.model_validate(
            {
                "name": "stubborn",
                "start": [sys.executable, "-c", STUBBORN, str(tmp_path / "termed")],
                "stop_grace_s": 3,
            }
        )
        state = tmp_path / "state"
        apps = ApplicationSet([web, broken, stubborn], state)
        board = NodeBoard(role=role, epoch=EPOCH)
        outbox = Outbox(bus)
        requests = RestartRequests(bus, CLUSTER, NODE, board, apps, outbox.put)
        rec = await EventRecorder().start(bus, CLUSTER)
        tasks.extend(asyncio.create_task(t) for t in (outbox.run(), requests.run()))
        node = Node(bus, apps, board, requests, rec, port, state / "apps" / "web.pid")
        made.append(node)

        async def consumer_exists() -> bool:
            try:
                await bus.js.consumer_info(EVENTS_STREAM, requests.durable)
            except NotFoundError:
                return False
            return True

        # The durable reads requests published once it exists.
        await eventually(consumer_exists, WAIT_S, "the restart request consumer")
        return node

    yield make
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
    for node in made:
        await node.rec.stop()
        await node.apps.stop()


async def test_the_active_restarts_the_application_and_records_it(make_node: MakeNode) -> None:
    node = await make_node(Role.ACTIVE)
    before = await node.start_web()

    asked = request()
    outcome = await node.answer(asked)
    assert outcome.payload.ok, outcome.payload.reason
    assert outcome.payload.reason.startswith("web restarted")
    assert "asked by test: after VM remediation" in outcome.payload.reason
    assert outcome.epoch == EPOCH
    assert outcome.correlation_id == asked.id

    after = node.pid()
    assert after is not None and after != before
    assert process_alive(after) and not process_alive(before)
    await eventually(node.healthy, WAIT_S, "the restarted demo app healthy")


@pytest.mark.parametrize("role", [Role.PASSIVE, None], ids=["passive", "no-role"])
async def test_a_node_that_is_not_active_ignores_the_request(
    make_node: MakeNode, role: Role | None
) -> None:
    node = await make_node(role)

    outcome = await node.answer(request())
    assert not outcome.payload.ok
    assert outcome.payload.reason.startswith("ignored: n1 is not the Active")
    assert ("plays passive" if role else "has no role yet") in outcome.payload.reason
    # Nothing was started.
    assert node.pid() is None
    assert (await node.apps.controls["web"].status()).state is AppState.STOPPED
    assert not await node.healthy()


async def test_an_unknown_application_is_refused_naming_the_known_ones(
    make_node: MakeNode,
) -> None:
    node = await make_node(Role.ACTIVE)
    before = await node.start_web()

    outcome = await node.answer(request("nope"))
    assert not outcome.payload.ok
    assert outcome.payload.reason.startswith(
        "refused: no application 'nope' on n1 (known: web, broken, stubborn)"
    )
    assert node.pid() == before  # nothing else was touched


async def test_a_failing_restart_is_reported_with_the_error(make_node: MakeNode) -> None:
    node = await make_node(Role.ACTIVE)

    outcome = await node.answer(request("broken"))
    assert not outcome.payload.ok
    assert outcome.payload.reason.startswith("failed: broken could not be restarted")
    assert "exited at once with exit code 3" in outcome.payload.reason


async def test_a_node_demoted_while_it_restarts_stops_the_application_again(
    make_node: MakeNode, bus: Bus, tmp_path: Path
) -> None:
    node = await make_node(Role.ACTIVE)
    await node.apps.start(["stubborn"])
    control = node.apps.controls["stubborn"]
    asked = request("stubborn")
    await bus.publish(asked)
    # The restart is under way (the old process got its SIGTERM): the node is demoted.
    await eventually((tmp_path / "termed").exists, WAIT_S, "the restart to begin")
    node.board.role = Role.PASSIVE

    await eventually(lambda: node.outcomes(asked), WAIT_S, "the answer")
    (outcome,) = node.outcomes(asked)
    assert not outcome.payload.ok
    assert "stubborn restarted" in outcome.payload.reason
    assert "then n1 stopped being the Active: stubborn: stopped" in outcome.payload.reason
    assert (await control.status()).state is AppState.STOPPED


async def test_a_stale_request_is_ignored(make_node: MakeNode) -> None:
    node = await make_node(Role.ACTIVE)
    before = await node.start_web()

    outcome = await node.answer(request(occurred_at=utcnow() - timedelta(hours=1)))
    assert not outcome.payload.ok
    assert outcome.payload.reason.startswith("ignored: requested 3600s ago")
    assert node.pid() == before


async def test_a_redelivered_request_does_not_restart_twice(make_node: MakeNode, bus: Bus) -> None:
    node = await make_node(Role.ACTIVE)
    await node.start_web()
    asked = request()
    first = await node.answer(asked)
    assert first.payload.ok, first.payload.reason
    restarted = node.pid()

    # The same event published again is dropped by the stream (its id is the message id) ...
    assert (await bus.publish(asked)).duplicate
    # ... and one that reaches the consumer again (e.g. past the stream's duplicate window)
    # is acknowledged without being carried out.
    subject = event_subject(CLUSTER, asked.type)
    ack = await bus.publish_raw(subject, asked.to_json(), {"Nats-Msg-Id": f"again-{asked.id}"})
    assert not ack.duplicate
    await node.settled()

    assert node.pid() == restarted
    assert len(node.outcomes(asked)) == 1


async def test_a_request_for_another_node_is_left_to_it(make_node: MakeNode, bus: Bus) -> None:
    node = await make_node(Role.ACTIVE)
    before = await node.start_web()

    other = request(node="n2")
    await bus.publish(other)
    await node.settled()
    assert node.outcomes(other) == []
    assert node.pid() == before


async def test_a_malformed_message_goes_to_the_dead_letter_stream(
    make_node: MakeNode, bus: Bus
) -> None:
    node = await make_node(Role.PASSIVE)
    subject = event_subject(CLUSTER, "ApplicationRestartRequested")
    await bus.publish_raw(subject, b'{"type": "ApplicationRestartRequested", "version": 1}')
    # A valid event of another type on the request subject: the handler refuses it.
    wrong = ApplicationRestarted(
        cluster=CLUSTER,
        node=NODE,
        payload={"application": "web", "attempt": 1, "ok": True, "reason": "x"},  # type: ignore[arg-type]
    )
    await bus.publish_raw(subject, wrong.to_json())
    # The consumer goes on with the next request.
    outcome = await node.answer(request())
    assert outcome.payload.reason.startswith("ignored")

    info = await bus.js.stream_info(DLQ_STREAM)
    dead = [
        await bus.js.get_msg(DLQ_STREAM, s)
        for s in range(info.state.first_seq, info.state.last_seq + 1)
    ]
    assert [m.subject for m in dead] == [f"tandem.dlq.{EVENTS_STREAM}.{node.requests.durable}"] * 2
    reasons = [m.headers["Tandem-Dlq-Reason"] for m in dead]  # type: ignore[index]
    assert reasons[0].startswith("undecodable")
    assert reasons[1].startswith("handler failed: ValueError: expected an ApplicationRestart")
    assert "got ApplicationRestarted of rr" in reasons[1]
