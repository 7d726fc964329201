"""The step executor: a node's answers to the orchestrator's saga commands that touch the
applications and the public identity (``StopApplications``, ``StartApplications``, ``Hide``,
``Expose``). The replication steps are answered by the replicator of the same agent.

Each step is idempotent, bounded by the command's ``timeout_s``, fenced by epoch (the
``CommandServer`` refuses an older epoch) and recorded as ``CommandExecuted``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from tandem.agent.apps import ApplicationSet
from tandem.agent.control.base import ControlError
from tandem.agent.identity.base import NetworkIdentity
from tandem.events.catalog import (
    CommandExecuted,
    Expose,
    Hide,
    NodeRoleAssumed,
    Ping,
    StartApplications,
    StopApplications,
)
from tandem.events.catalog.execution import CommandExecutedPayload
from tandem.events.catalog.roles import NodeRoleAssumedPayload
from tandem.events.catalog.vocabulary import Identity, Role
from tandem.events.envelope import Command, CommandResult, Event
from tandem.events.nodeboard import NodeBoard

log = logging.getLogger(__name__)

COMMANDS = ["StopApplications", "StartApplications", "Hide", "Expose", "Ping"]


class ServeGate(Protocol):
    """The lease keeper's say on serving: a node serves only while it holds its lease, and
    its node guard is armed before it exposes anything."""

    def refusal(self) -> str: ...

    def arm(self) -> None: ...

    def disarm(self) -> None: ...


class _OpenGate:
    def refusal(self) -> str:
        return ""

    def arm(self) -> None:
        pass

    def disarm(self) -> None:
        pass


class StepExecutor:
    def __init__(
        self,
        cluster: str,
        node: str,
        identity_kind: Identity | None,
        apps: ApplicationSet,
        identity: NetworkIdentity,
        board: NodeBoard,
        emit: Callable[[Event], None],
        gate: ServeGate | None = None,
        steered_file: Path | None = None,
        hold_file: Path | None = None,
    ) -> None:
        #: An operator's hold on stopped applications (tandem.agent.holds): a saga's start or
        #: a role change takes it back, on disk too.
        self.hold_file = hold_file
        self.gate: ServeGate = gate or _OpenGate()
        #: Where "a saga took this node down at epoch E" survives the agent's restart: an
        #: agent killed between a switchover's StopApplications and its Hide must not come
        #: back serving beside the node the saga moves to.
        self.steered_file = steered_file
        if steered_file is not None:
            board.steered_epoch = read_steered(steered_file)
        self.cluster = cluster
        self.node = node
        self.identity_kind = identity_kind
        self.apps = apps
        self.identity = identity
        self.board = board
        self.emit = emit

    async def handle(self, command: Command) -> CommandResult:
        timeout = float(getattr(command.payload, "timeout_s", 30.0))
        try:
            async with asyncio.timeout(timeout):
                reason = await self._carry_out(command)
            ok = True
        except TimeoutError:
            ok, reason = False, f"{command.type} did not finish within {timeout:g}s"
        except ControlError as exc:
            ok, reason = False, exc.message
        return CommandResult(
            command_id=command.id, idempotency_key=command.idempotency_key, ok=ok, reason=reason
        )

    async def _carry_out(self, command: Command) -> str:
        if isinstance(command, StopApplications):
            # A saga steers the node now: a self-fenced node no longer unfences by itself, and
            # one that fences during the saga does not either (steered_epoch).
            self.board.fenced = False
            await self._steered(command)
            done = await self.apps.stop(command.payload.applications)
            return "stopped: " + ("; ".join(done) or "no applications configured")
        if isinstance(command, StartApplications):
            self._may_serve()
            # The applications' restart policy: a start that fails at once is tried again
            # within this step's timeout (the orchestrator then retries the step forward).
            done = await self.apps.start(command.payload.applications, retry=True)
            self._release_hold()  # a saga's start takes back an operator's stop
            # A fence stays: a node that hid itself after the saga's Expose is still hidden,
            # and only unfencing (or another Expose) brings its identity back (a chaos run
            # saw a switchover complete onto a node that stayed hidden for good).
            self._unsteered()
            return "started: " + ("; ".join(done) or "no applications configured")
        if isinstance(command, Hide):
            self.board.fenced = False  # steered by a saga (see StopApplications)
            await self._steered(command)
            status = await self.identity.hide()
            self.assume(Role.PASSIVE, f"hidden: {status.detail}", command.epoch)
            return f"hidden: {status.detail}"
        if isinstance(command, Expose):
            if self.board.isolated:
                # Network protection's veto: a node cut off from its network must not serve.
                raise ControlError(
                    f"{self.node} is isolated (every network check fails): it must not expose"
                )
            self._may_serve()
            try:
                status = await self.identity.expose()
            except OSError as exc:
                raise ControlError(f"could not expose: {exc}") from None
            self.board.fenced = False
            self._unsteered()
            self.assume(Role.ACTIVE, f"exposed: {status.detail}", command.epoch)
            return f"exposed: {status.detail}"
        if isinstance(command, Ping):
            role = self.board.role or "no role yet"
            return f"{self.node} answers: {role} at epoch {self.board.epoch}"
        raise ControlError(f"{command.type} is not a step this executor carries out")

    async def _steered(self, command: Command) -> None:
        self.board.steered_epoch = max(command.epoch, self.board.epoch)
        if self.steered_file is not None:
            await asyncio.to_thread(write_steered, self.steered_file, self.board.steered_epoch)

    def release_steer(self) -> None:
        """The saga that took this node down is over without moving it (role watch)."""
        self._unsteered()

    def _unsteered(self) -> None:
        self.board.steered_epoch = 0
        if self.steered_file is not None:
            self.steered_file.unlink(missing_ok=True)

    def _release_hold(self) -> None:
        self.board.held_apps = frozenset()
        if self.hold_file is not None:
            self.hold_file.unlink(missing_ok=True)  # one syscall, rare: not worth a thread

    def _may_serve(self) -> None:
        """Refuse to serve without a lease; arm the guard before anything is exposed."""
        refusal = self.gate.refusal()
        if refusal:
            raise ControlError(f"{refusal}: it must not serve")
        self.gate.arm()

    def assume(self, role: Role, reason: str, epoch: int) -> None:
        """Record the role the node now really plays (after expose/hide took effect)."""
        before = self.board.role
        changed = before is not role
        self.board.role = role
        if changed and before is not None:
            # An operator's stop (tandem app stop) held the applications of that role only.
            # (From no role: the agent just started, and a hold kept on disk is the start's.)
            self._release_hold()
        if role is Role.PASSIVE:
            self.gate.disarm()
        if epoch > self.board.epoch:
            self.board.epoch = epoch
        if changed:
            log.info("%s now plays %s: %s", self.node, role, reason)
            self.emit(
                NodeRoleAssumed(
                    cluster=self.cluster,
                    node=self.node,
                    epoch=self.board.epoch,
                    payload=NodeRoleAssumedPayload(
                        identity=self.identity_kind or Identity.PRIMARY, role=role, reason=reason
                    ),
                )
            )

    async def fence(self, reason: str) -> list[str]:
        """Self-fencing: withdraw the identity first (clients stop reaching this node at
        once), then stop the applications. Returns what was done, in order."""
        actions: list[str] = []
        try:
            status = await self.identity.hide()
            actions.append(f"hid public identity ({status.detail})")
        except Exception as exc:
            actions.append(f"could not hide the public identity: {exc}")
        try:
            actions += [f"stopped {line}" for line in await self.apps.stop()]
        except ControlError as exc:
            actions.append(f"could not stop every application: {exc.message}")
        self.assume(Role.PASSIVE, f"self-fenced: {reason}", self.board.epoch)
        return actions

    def record(self, command: Command, result: CommandResult, elapsed_s: float) -> None:
        """``CommandServer`` listener: every step carried out or refused becomes an event."""
        self.emit(
            CommandExecuted(
                cluster=self.cluster,
                node=self.node,
                epoch=command.epoch,
                correlation_id=command.correlation_id,
                causation_id=command.id,
                payload=CommandExecutedPayload(
                    command_type=command.type,
                    command_id=command.id,
                    idempotency_key=command.idempotency_key,
                    ok=result.ok,
                    reason=result.reason,
                    elapsed_s=max(elapsed_s, 0.0),
                ),
            )
        )


def read_steered(path: Path) -> int:
    try:
        return int(path.read_text().strip() or 0)
    except FileNotFoundError:
        return 0
    except (OSError, ValueError) as exc:
        # Unreadable: assume a saga steers it (waiting for steps is the safe side).
        log.warning("%s unreadable (%s): the node waits for a saga's steps", path, exc)
        return 2**31


def write_steered(path: Path, epoch: int) -> None:
    """Written before the step is carried out, durably (a crash right after must see it)."""
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        f.write(f"{epoch}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
