"""The replication steps of switchover and failover, answered by the replicator of a node:
``DrainSendQueue``, ``ApplyReceiveQueue``, ``StartIntercepting``, ``StopIntercepting``.

Each step is idempotent (draining a drained queue, applying an applied one, starting a
running source: all succeed and say so) and bounded by the command's ``timeout_s``.
"""

from __future__ import annotations

from tandem.events.catalog import (
    ApplyReceiveQueue,
    DrainSendQueue,
    ReinstateReplica,
    StartIntercepting,
    StopIntercepting,
)
from tandem.events.envelope import Command, CommandResult
from tandem.replicator.node import ReplicatorNode

COMMANDS = [
    "DrainSendQueue",
    "ApplyReceiveQueue",
    "StartIntercepting",
    "StopIntercepting",
    "ReinstateReplica",
]


def _result(command: Command, ok: bool, reason: str) -> CommandResult:
    return CommandResult(
        command_id=command.id, idempotency_key=command.idempotency_key, ok=ok, reason=reason
    )


async def handle_step(node: ReplicatorNode, command: Command) -> CommandResult:
    timeout = float(getattr(command.payload, "timeout_s", 30.0))
    try:
        reason = await _carry_out(node, command, timeout)
    except TimeoutError:
        return _result(command, False, f"{command.type} did not finish within {timeout:g}s")
    except StepRefused as exc:
        return _result(command, False, str(exc))
    return _result(command, True, reason)


async def nothing_to_replicate(command: Command) -> CommandResult:
    """The answer of a node that protects no folder: every replication step is done."""
    return _result(command, True, f"{command.node} replicates nothing: {command.type} is a no-op")


class StepRefused(Exception):
    pass


async def _carry_out(node: ReplicatorNode, command: Command, timeout: float) -> str:
    if isinstance(command, DrainSendQueue):
        return await node.drain(timeout)
    if isinstance(command, ApplyReceiveQueue):
        return await node.catch_up(timeout)
    if isinstance(command, StopIntercepting):
        return await node.hold(timeout)
    if isinstance(command, StartIntercepting):
        record = await node.read_record()
        if record is None or record.active != node.s.node:
            holder = f"{record.active} at epoch {record.epoch}" if record else "nobody"
            raise StepRefused(
                f"the role record names {holder} Active: {node.s.node} cannot start intercepting"
            )
        node.release()
        node.poke()
        return await node.wait_side("source", command.epoch, timeout)
    if isinstance(command, ReinstateReplica):
        return await _reinstate(node, timeout)
    raise StepRefused(f"{command.type} is not a replication step")


async def _reinstate(node: ReplicatorNode, timeout: float) -> str:
    """``tandem reinstate``: a node held by ``StopIntercepting`` (the old Active of an
    automatic switchover) runs the target side of the current Active again."""
    record = await node.read_record()
    if record is None or record.active == node.s.node:
        holder = f"{record.active} at epoch {record.epoch}" if record else "nobody"
        raise StepRefused(
            f"the role record names {holder} Active: {node.s.node} is not to be a Passive"
        )
    held = node.held
    node.record = record
    node.release()
    node.poke()
    said = await node.wait_side("target", record.epoch, timeout)
    return ("no longer held; " if held else "") + said


__all__ = ["COMMANDS", "StepRefused", "handle_step"]
