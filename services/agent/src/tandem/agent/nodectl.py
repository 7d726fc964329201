"""An operator's control of this node's applications and health rules, asked through the
orchestrator (``tandem app stop|start|restart``, ``tandem cleanup``):

- ``ControlApplications``: stop, start or restart applications, on the Active only. A stop
  by an operator is not a failure: the applications stopped are *held* (``NodeBoard.held_apps``)
  and their health checks pause, so no rule raises an alert, restarts them or asks for a
  switchover, until a start (or a restart) takes them back. The hold is on disk: an agent
  restarted Active at the same epoch leaves them stopped (``tandem.agent.holds``).
- ``CleanUpNode``: every health rule of the node back to its first rung (the monitor's
  health loop resets its rule engine when ``NodeBoard.ladder_resets`` changes), and a
  stale fenced state cleared: one taken at an epoch the role record has left since (the
  node is a hidden Passive). A node fenced at the current epoch is kept fenced (its lease
  keeper and guard hold it; it unfences by itself once it holds its lease again).

Both answered on the node's command subject (only the orchestrator's and the admin's
commands are accepted: ``CommandServer``), and recorded as ``CommandExecuted``.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Protocol

from tandem.agent.apps import ApplicationSet
from tandem.agent.control.base import ControlError
from tandem.agent.holds import write_hold
from tandem.events.catalog import CleanUpNode, ControlApplications
from tandem.events.catalog.vocabulary import Role
from tandem.events.envelope import Command, CommandResult
from tandem.events.nodeboard import NodeBoard

log = logging.getLogger(__name__)

COMMANDS = ["ControlApplications", "CleanUpNode"]


class LeaseGate(Protocol):
    def refusal(self) -> str: ...


class NodeControl:
    def __init__(
        self,
        node: str,
        apps: ApplicationSet,
        board: NodeBoard,
        rules: list[str],
        gate: LeaseGate | None = None,
        hold_file: Path | None = None,
    ) -> None:
        self.node = node
        #: Where the hold survives the agent's restart (tandem.agent.holds).
        self.hold_file = hold_file
        self.apps = apps
        self.board = board
        self.rules = rules
        self.gate = gate

    async def handle(self, command: Command) -> CommandResult:
        timeout = float(getattr(command.payload, "timeout_s", 30.0))
        data: dict[str, object] = {}
        try:
            async with asyncio.timeout(timeout):
                ok, reason, data = await self._carry_out(command)
        except TimeoutError:
            ok, reason = False, f"{command.type} did not finish within {timeout:g}s"
        except ControlError as exc:
            ok, reason = False, exc.message
        return CommandResult(
            command_id=command.id,
            idempotency_key=command.idempotency_key,
            ok=ok,
            reason=reason,
            data=data,
        )

    async def _carry_out(self, command: Command) -> tuple[bool, str, dict[str, object]]:
        if isinstance(command, CleanUpNode):
            return self._clean_up(command)
        if isinstance(command, ControlApplications):
            return await self._control(command)
        raise ControlError(f"{command.type} is not a command this node control carries out")

    def _clean_up(self, command: CleanUpNode) -> tuple[bool, str, dict[str, object]]:
        done: list[str] = []
        data: dict[str, object] = {}
        b = self.board
        if b.fenced and command.payload.clear_stale_fence:
            if b.role is Role.PASSIVE and b.epoch > b.fenced_epoch:
                # The role record moved on since it fenced (another node was made Active):
                # a hidden Passive that only still says "fenced". Nothing is exposed here.
                # (No role yet, after a restart, is not known Passive: the fence stays, or
                # the node's own reconcile could resume it as Active outside any saga.)
                why = b.fenced_reason or "no reason recorded"
                b.fenced, b.fenced_reason, b.fenced_since = False, "", None
                done.append(
                    f"stale fence cleared (fenced at epoch {b.fenced_epoch}: {why}; the "
                    f"cluster is at epoch {b.epoch} and {self.node} is a Passive)"
                )
                data["unfenced"] = True
            elif b.epoch > b.fenced_epoch:
                data["kept"] = (
                    f"{self.node} fenced itself at epoch {b.fenced_epoch} and has no role "
                    f"at epoch {b.epoch} yet: kept until it is known Passive (or a saga "
                    "brings it up)"
                )
            else:
                why = b.fenced_reason or "no reason recorded"
                data["kept"] = (
                    f"{self.node} fenced itself at epoch {b.fenced_epoch}, the current one "
                    f"({why}): its lease keeper and guard hold it fenced until it holds its "
                    "lease again (it then unfences by itself) or a saga moves the role"
                )
        b.ladder_resets += 1
        said = ", ".join(self.rules) if self.rules else "none configured"
        done.append(f"restart ladders reset (rules: {said})")
        log.info("%s: cleanup (%s): %s", self.node, command.payload.reason, "; ".join(done))
        return True, f"{self.node}: " + "; ".join(done), data

    async def _control(self, command: ControlApplications) -> tuple[bool, str, dict[str, object]]:
        p = command.payload
        known = self.apps.names()
        unknown = sorted(set(p.applications) - set(known))
        if unknown:
            there = ", ".join(known) or "none"
            why = f"no application {', '.join(unknown)} on {self.node} (there: {there})"
            return False, why, {"unknown": unknown, "known": known}
        if self.board.role is not Role.ACTIVE:
            plays = "has no role yet" if self.board.role is None else f"plays {self.board.role}"
            why = f"{self.node} is not the Active ({plays}): its applications do not run here"
            return False, why, {"refused": True}
        if self.board.fenced and p.action != "stop":
            why = f"{self.node} fenced itself ({self.board.fenced_reason}): it must not serve"
            return False, why, {"refused": True}
        names = p.applications or known
        if not names:
            return True, f"{self.node} has no applications configured", {"applications": []}
        log.info("%s: %s of %s asked: %s", self.node, p.action, ", ".join(names), p.reason)
        done: list[str] = []
        if p.action in ("stop", "restart"):
            # Held first: a check sampling while it stops must not take it for a failure.
            self.board.held_apps = self.board.held_apps | set(names)
            await self._keep_hold()
            done += [f"stopped {line}" for line in await self.apps.stop(names)]
        if p.action in ("start", "restart"):
            refusal = self.gate.refusal() if self.gate is not None else ""
            if refusal:
                raise ControlError(f"{'; '.join([*done, refusal])}: it must not serve")
            try:
                done += [f"started {line}" for line in await self.apps.start(names)]
            finally:
                # Taken back by the operator: the health rules watch it again (a start that
                # failed is theirs to repair).
                self.board.held_apps = self.board.held_apps - set(names)
                await self._keep_hold()
        if p.action == "stop":
            done.append("held: the health rules leave it stopped until a start")
        return True, "; ".join(done), {"applications": names}

    async def _keep_hold(self) -> None:
        if self.hold_file is not None:
            await asyncio.to_thread(
                write_hold, self.hold_file, self.board.epoch, self.board.held_apps
            )
