"""The step executor served over a real nats-server with real processes: the orchestrator's
steps (StartApplications, Expose, Hide, StopApplications) carried out once per idempotency
key, refused at an older epoch, bounded by their timeout, each recorded as CommandExecuted;
and self-fencing (hide first, then stop)."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from helpers import eventually
from tandem.agent.apps import ApplicationSet, capture_gate
from tandem.agent.control import ApplicationConfig, AppState, ProcessControl
from tandem.agent.executor import COMMANDS, StepExecutor
from tandem.agent.identity.loopback import LoopbackIdentity
from tandem.events.bus import Bus
from tandem.events.catalog import (
    CommandExecuted,
    Expose,
    Hide,
    NodeRoleAssumed,
    StartApplications,
    StopApplications,
)
from tandem.events.catalog.commands import ApplicationsPayload, StepPayload
from tandem.events.catalog.vocabulary import Identity, Role
from tandem.events.envelope import Command, CommandResult, Event
from tandem.events.nodeboard import NodeBoard
from tandem.events.rpc import CommandServer, send_command

CLUSTER, NODE, EPOCH = "c1", "n1", 3
SLEEPER = "import time; time.sleep(600)"
IGNORES_TERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(600)"
)


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@dataclass
class Node:
    executor: StepExecutor
    apps: ApplicationSet
    identity: LoopbackIdentity
    board: NodeBoard
    events: list[Event]
    bus: Bus

    @property
    def control(self) -> ProcessControl:
        control = self.apps.controls["app"]
        assert isinstance(control, ProcessControl)
        return control

    async def pid(self) -> int | None:
        status = await self.control.status()
        return status.pid if status.state is AppState.RUNNING else None

    async def send(self, command: Command, timeout: float = 60.0) -> CommandResult:
        return await send_command(self.bus, command, timeout=timeout)

    def of_type(self, cls: type[Event]) -> list[Any]:
        return [e for e in self.events if isinstance(e, cls)]

    def executed(self, key: str) -> list[CommandExecuted]:
        return [e for e in self.of_type(CommandExecuted) if e.payload.idempotency_key == key]


MakeNode = Callable[..., Awaitable[Node]]


@pytest.fixture
async def make_node(bus: Bus, tmp_path: Path) -> AsyncIterator[MakeNode]:
    """Builds a node with one process application, served on the bus; kills what is left."""
    servers: list[CommandServer] = []
    controls: list[ProcessControl] = []

    async def make(
        code: str = SLEEPER, protected_root: Path | None = None, **app_fields: Any
    ) -> Node:
        app = ApplicationConfig.model_validate(
            {
                "name": "app",
                "start": [sys.executable, "-c", code],
                "log_file": tmp_path / "app.log",
                **app_fields,
            }
        )
        board = NodeBoard(epoch=EPOCH)
        apps = ApplicationSet([app], tmp_path / "state", gate=capture_gate(protected_root, board))
        identity = LoopbackIdentity(tmp_path / "state" / "identity.json")
        events: list[Event] = []
        executor = StepExecutor(
            CLUSTER, NODE, Identity.PRIMARY, apps, identity, board, events.append
        )
        server = CommandServer(
            bus,
            CLUSTER,
            NODE,
            executor.handle,
            lambda: board.epoch,
            commands=COMMANDS,
            on_result=executor.record,
        )
        await server.start()
        servers.append(server)
        node = Node(executor, apps, identity, board, events, bus)
        controls.append(node.control)
        return node

    yield make
    for server in servers:
        await server.stop()
    for control in controls:
        record = control.pid_file.read_text().split() if control.pid_file.exists() else None
        if record and alive(int(record[0])):
            psutil.Process(int(record[0])).kill()


def start(key: str | None = None, epoch: int = EPOCH, timeout_s: float = 30.0) -> Command:
    keyed = {"idempotency_key": key} if key else {}
    payload = ApplicationsPayload(reason="test", timeout_s=timeout_s)
    return StartApplications(cluster=CLUSTER, node=NODE, epoch=epoch, payload=payload, **keyed)


def stop(epoch: int = EPOCH, timeout_s: float = 30.0) -> Command:
    payload = ApplicationsPayload(reason="test", timeout_s=timeout_s)
    return StopApplications(cluster=CLUSTER, node=NODE, epoch=epoch, payload=payload)


def step(cls: type[Hide] | type[Expose], epoch: int = EPOCH) -> Command:
    return cls(cluster=CLUSTER, node=NODE, epoch=epoch, payload=StepPayload(reason="test"))


async def test_steps_over_the_bus(make_node: MakeNode) -> None:
    node = await make_node()

    # StartApplications: the process runs.
    first = await node.send(start(key="start-1"))
    assert first.ok, first.reason
    assert first.reason.startswith("started: app")
    assert not first.replayed
    pid = await node.pid()
    assert pid is not None and alive(pid)

    # The same idempotency key again: the first answer, not a second run.
    again = await node.send(start(key="start-1"))
    assert again.ok and again.replayed
    assert again.reason == first.reason
    assert await node.pid() == pid
    assert len(node.executed("start-1")) == 1

    # A new key: carried out, and the application is already running.
    fresh = await node.send(start(key="start-2"))
    assert fresh.ok and not fresh.replayed
    assert "already running" in fresh.reason
    assert await node.pid() == pid
    assert len(node.executed("start-2")) == 1

    # Expose: the identity is exposed and the node plays Active.
    exposed = await node.send(step(Expose))
    assert exposed.ok, exposed.reason
    state = json.loads(node.identity.state_file.read_text())
    assert state["address"] == node.identity.address
    assert (await node.identity.status()).exposed
    assert node.board.role is Role.ACTIVE
    (assumed,) = node.of_type(NodeRoleAssumed)
    assert assumed.payload.role is Role.ACTIVE and assumed.epoch == EPOCH
    assert assumed.payload.identity is Identity.PRIMARY

    # Hide: withdrawn, the node plays Passive.
    hidden = await node.send(step(Hide))
    assert hidden.ok and hidden.reason.startswith("hidden")
    assert not node.identity.state_file.exists()
    assert not (await node.identity.status()).exposed
    assert node.board.role is Role.PASSIVE
    assert [e.payload.role for e in node.of_type(NodeRoleAssumed)] == [Role.ACTIVE, Role.PASSIVE]

    # StopApplications: the process is gone.
    stopped = await node.send(stop())
    assert stopped.ok, stopped.reason
    assert stopped.reason.startswith("stopped: app")
    await eventually(lambda: not alive(pid), what=f"pid {pid} to be gone")
    assert (await node.control.status()).state is AppState.STOPPED

    # Every step carried out was recorded once, successfully, in order.
    recorded = node.of_type(CommandExecuted)
    assert [e.payload.command_type for e in recorded] == [
        "StartApplications",
        "StartApplications",
        "Expose",
        "Hide",
        "StopApplications",
    ]
    assert all(e.payload.ok and e.node == NODE for e in recorded)


async def test_a_command_from_an_older_epoch_is_refused_and_recorded(make_node: MakeNode) -> None:
    node = await make_node()
    command = start(key="old-start", epoch=EPOCH - 1)
    result = await node.send(command)
    assert not result.ok
    assert "stale epoch 2" in result.reason
    assert await node.pid() is None  # nothing was started

    await eventually(lambda: node.executed("old-start"), what="the refusal to be recorded")
    (refused,) = node.executed("old-start")
    assert refused.payload.ok is False
    assert "stale epoch" in refused.payload.reason
    assert refused.payload.command_id == command.id
    assert refused.causation_id == command.id
    assert refused.epoch == EPOCH - 1
    assert node.board.epoch == EPOCH


async def test_a_step_that_outlasts_its_timeout_fails(make_node: MakeNode, tmp_path: Path) -> None:
    # The application ignores SIGTERM and may take 120 s to be killed; the step may take 0.5 s.
    node = await make_node(IGNORES_TERM, stop_grace_s=120)
    started = await node.send(start())
    assert started.ok, started.reason
    log = tmp_path / "app.log"
    await eventually(
        lambda: log.exists() and "ready" in log.read_text(), what="the app's SIGTERM handler"
    )
    pid = await node.pid()
    assert pid is not None

    command = stop(timeout_s=0.5)
    result = await node.send(command)
    assert not result.ok
    assert "did not finish within 0.5s" in result.reason
    assert alive(pid)  # it ignored SIGTERM and the step gave up before its SIGKILL

    await eventually(lambda: node.executed(command.idempotency_key), what="the failure recorded")
    (recorded,) = node.executed(command.idempotency_key)
    assert recorded.payload.ok is False
    assert "did not finish within" in recorded.payload.reason


async def test_fence_hides_first_then_stops(make_node: MakeNode) -> None:
    node = await make_node()
    assert (await node.send(start())).ok
    assert (await node.send(step(Expose))).ok
    pid = await node.pid()
    assert pid is not None and node.identity.state_file.exists()

    actions = await node.executor.fence("lease not renewed for 3.1s")

    assert len(actions) == 2
    assert actions[0].startswith("hid public identity")
    assert actions[1].startswith("stopped app")
    assert not node.identity.state_file.exists()
    await eventually(lambda: not alive(pid), what=f"pid {pid} to be gone")
    assert node.board.role is Role.PASSIVE
    last = node.of_type(NodeRoleAssumed)[-1]
    assert last.payload.role is Role.PASSIVE
    assert "self-fenced: lease not renewed" in last.payload.reason

    # Fencing a node that is already hidden and stopped still succeeds and says so.
    again = await node.executor.fence("again")
    assert again[0] == "hid public identity (already hidden)"
    assert again[1].startswith("stopped app") and "already stopped" in again[1]


async def test_an_isolated_node_refuses_to_expose(make_node: MakeNode) -> None:
    """Network protection's veto: while every network check fails, the node must not serve."""
    node = await make_node()
    node.board.isolated = True
    refused = await node.send(step(Expose))
    assert not refused.ok and "isolated" in refused.reason
    assert not (await node.identity.status()).exposed
    node.board.isolated = False
    assert (await node.send(step(Expose))).ok
    assert (await node.identity.status()).exposed


async def test_no_application_starts_while_the_protected_folder_is_not_captured(
    make_node: MakeNode, tmp_path: Path
) -> None:
    """A saga's StartApplications, a restart: refused with the reason until the replicator
    says the capture is live at the node's epoch (what the app wrote before would bypass
    replication, and the next failover would lose it without an error)."""
    node = await make_node(protected_root=tmp_path / "data")
    refused = await node.send(start("k1"))
    assert not refused.ok
    assert f"the capture of {tmp_path / 'data'} is not live at epoch {EPOCH}" in refused.reason
    assert await node.pid() is None
    ok, said = await node.apps.restart("app")
    assert not ok and "not restarted: the capture" in said
    assert await node.pid() is None
    node.board.source_ready_epoch = EPOCH - 1  # a source of an older epoch does not count
    assert not (await node.send(start("k2"))).ok
    node.board.source_ready_epoch = EPOCH
    started = await node.send(start("k3"))
    assert started.ok, started.reason
    assert await node.pid() is not None


async def test_start_applications_follows_the_application_restart_policy(
    make_node: MakeNode, tmp_path: Path
) -> None:
    """A start that fails at once (a stale lock, a port not yet free) is tried again by the
    application's restart policy within the step, and the answer says which try worked."""
    marker = tmp_path / "failed-once"
    flaky = (
        "import pathlib, sys, time\n"
        f"m = pathlib.Path({str(marker)!r})\n"
        "if not m.exists():\n"
        "    m.write_text('x'); sys.exit(3)\n"
        "time.sleep(3600)\n"
    )
    node = await make_node(flaky, restart={"tries": 2, "delay_s": 0.1})
    started = await node.send(start("k1"))
    assert started.ok, started.reason
    assert "(on try 2)" in started.reason
    assert await node.pid() is not None


async def test_start_applications_gives_up_after_the_policy_tries(make_node: MakeNode) -> None:
    node = await make_node("import sys; sys.exit(3)", restart={"tries": 1, "delay_s": 0.1})
    failed = await node.send(start("k1"))
    assert not failed.ok
    assert "exit code 3" in failed.reason and "(after 2 tries)" in failed.reason


async def test_start_applications_stops_trying_at_the_policy_deadline(make_node: MakeNode) -> None:
    """Ten tries are allowed, but the next pause would pass the policy's overall deadline:
    the step fails then, saying why, instead of trying on past what the saga waits for."""
    node = await make_node(
        "import sys; sys.exit(3)",
        restart={"tries": 10, "delay_s": 0.2, "backoff": 3.0, "deadline_s": 1.0},
    )
    failed = await node.send(start("k1"))
    assert not failed.ok
    assert "(restart deadline 1s reached)" in failed.reason, failed.reason
    assert "(after 10 tries)" not in failed.reason
