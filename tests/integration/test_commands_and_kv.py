"""Command request/reply (idempotency, epoch fencing) and KV compare-and-set."""

from __future__ import annotations

import logging

import pytest

from tandem.events.bus import Bus
from tandem.events.catalog import Hide, Ping
from tandem.events.catalog.commands import PingPayload, StepPayload
from tandem.events.envelope import Command, CommandResult
from tandem.events.errors import CasConflictError, CommandFailedError
from tandem.events.headers import SENDER
from tandem.events.kv import compare_and_set
from tandem.events.rpc import CommandServer, send_command
from tandem.events.subjects import DLQ_STREAM, ROLES_BUCKET, command_subject, role_key


@pytest.fixture
async def node(bus: Bus):  # type: ignore[no-untyped-def]
    calls: list[Command] = []
    epoch = {"now": 3}

    async def handle(cmd: Command) -> CommandResult:
        calls.append(cmd)
        return CommandResult(
            command_id=cmd.id,
            idempotency_key=cmd.idempotency_key,
            ok=True,
            reason="hidden",
            data={"n": len(calls)},
        )

    server = CommandServer(bus, "demo", "primary", handle, lambda: epoch["now"])
    await server.start()
    yield calls, epoch
    await server.stop()


async def test_a_command_is_answered(bus: Bus, node) -> None:  # type: ignore[no-untyped-def]
    calls, _ = node
    result = await send_command(
        bus, Hide(cluster="demo", node="primary", epoch=3, payload=StepPayload(reason="switchover"))
    )
    assert result.ok and result.reason == "hidden" and result.data == {"n": 1}
    assert isinstance(calls[0], Hide)


async def test_the_same_idempotency_key_is_carried_out_once(bus: Bus, node) -> None:  # type: ignore[no-untyped-def]
    calls, _ = node
    first = Hide(
        cluster="demo",
        node="primary",
        epoch=3,
        idempotency_key="saga-7:hide",
        payload=StepPayload(),
    )
    retry = Hide(
        cluster="demo",
        node="primary",
        epoch=3,
        idempotency_key="saga-7:hide",
        payload=StepPayload(),
    )
    a = await send_command(bus, first)
    b = await send_command(bus, retry)
    assert len(calls) == 1
    assert a.data == b.data and b.replayed and not a.replayed


async def test_a_command_from_an_older_epoch_is_refused(bus: Bus, node) -> None:  # type: ignore[no-untyped-def]
    calls, epoch = node
    epoch["now"] = 5
    result = await send_command(
        bus, Hide(cluster="demo", node="primary", epoch=4, payload=StepPayload())
    )
    assert not result.ok and result.reason == "stale epoch 4: the cluster is at epoch 5"
    assert calls == []


async def test_a_command_whose_sender_may_not_command_nodes_is_refused_and_named(
    bus: Bus,
    node,  # type: ignore[no-untyped-def]
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The bus's permissions already keep an agent from publishing commands (tested in
    test_bus_permissions); the node says so again for a command whose sender is another."""
    calls, _ = node
    hide = Hide(cluster="demo", node="primary", epoch=3, payload=StepPayload())
    subject = command_subject("demo", "primary", "Hide")
    reply = await bus.nc.request(
        subject, hide.to_json(), timeout=5, headers={SENDER: "agent:demo:secondary"}
    )
    refused = CommandResult.model_validate_json(reply.data)
    assert not refused.ok and calls == []
    assert refused.reason.startswith("sent by agent:demo:secondary, who may not command nodes")
    with caplog.at_level(logging.INFO, logger="tandem.events.rpc"):
        result = await send_command(bus, hide)  # the suite's login: the admin
    assert result.ok and len(calls) == 1
    assert f"Hide {hide.id} (e3, key {hide.idempotency_key}) from admin" in caplog.text


async def test_a_malformed_command_gets_an_error_answer_and_is_dead_lettered(
    bus: Bus, node
) -> None:  # type: ignore[no-untyped-def]
    reply = await bus.nc.request(
        "tandem.cmd.demo.primary.Hide", b'{"type": "Hide", "version": 1}', timeout=5
    )
    result = CommandResult.model_validate_json(reply.data)
    assert not result.ok and result.reason.startswith(
        "undecodable command: invalid command 'Hide' v1"
    )
    dead = await bus.js.get_msg(DLQ_STREAM, 1)
    assert dead.subject == "tandem.dlq.CORE.cmd-demo-primary"


async def test_no_agent_listening_is_a_clear_failure(bus: Bus) -> None:
    with pytest.raises(CommandFailedError, match="no agent is listening"):
        await send_command(
            bus, Ping(cluster="demo", node="tertiary", payload=PingPayload()), timeout=2
        )


async def test_compare_and_set_lets_one_writer_win(bus: Bus) -> None:
    kv = await bus.kv(ROLES_BUCKET)
    key = role_key("demo")
    rev1 = await compare_and_set(kv, key, b'{"active": "primary", "epoch": 1}', None)
    with pytest.raises(CasConflictError):
        await compare_and_set(kv, key, b'{"active": "other", "epoch": 1}', None)
    rev2 = await compare_and_set(kv, key, b'{"active": "secondary", "epoch": 2}', rev1)
    with pytest.raises(CasConflictError, match="at revision"):
        await compare_and_set(kv, key, b'{"active": "primary", "epoch": 2}', rev1)
    entry = await kv.get(key)
    assert entry.revision == rev2 and entry.value == b'{"active": "secondary", "epoch": 2}'


async def test_a_step_that_failed_on_a_bus_fault_runs_again_when_retried(bus: Bus) -> None:
    """chaos s045 (run 7): ApplyReceiveQueue failed on a 503 from JetStream while a NATS node
    was down. The saga retries with the same key: the retry must run the step, not be answered
    with the fault; a failure that is not the bus's (a bug) is answered again as it was."""
    from nats.js.errors import ServiceUnavailableError

    faults = [ServiceUnavailableError(), None, KeyError("bug"), None]
    calls: list[Command] = []

    async def handle(cmd: Command) -> CommandResult:
        calls.append(cmd)
        fault = faults[len(calls) - 1]
        if fault is not None:
            raise fault
        return CommandResult(command_id=cmd.id, idempotency_key=cmd.idempotency_key, ok=True)

    server = CommandServer(bus, "demo", "primary", handle, lambda: 3)
    await server.start()
    try:

        def hide(key: str) -> Hide:
            return Hide(
                cluster="demo", node="primary", epoch=3, idempotency_key=key, payload=StepPayload()
            )

        first = await send_command(bus, hide("saga-8:hide"))
        assert not first.ok and first.reason.startswith("ServiceUnavailableError")
        again = await send_command(bus, hide("saga-8:hide"))
        assert again.ok and not again.replayed and len(calls) == 2
        broken = await send_command(bus, hide("saga-9:hide"))
        replay = await send_command(bus, hide("saga-9:hide"))
        assert not broken.ok and not replay.ok and replay.replayed and len(calls) == 3
    finally:
        await server.stop()
