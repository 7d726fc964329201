"""The agent's view of ``tandem_roles``: the epoch it fences commands with, and the role the
node should play when no step tells it otherwise.

- The role record names another node: this node must not serve. If it plays Active (or does
  not know yet), it hides and stops its applications, then plays Passive.
- The record names this node and it has no role yet (the agent just started): with
  ``resume_active`` it exposes and starts its applications once it holds its lease.
- The record names this node, it fenced itself (its lease lapsed, or its guard hid it), no
  saga has steered it since and it holds its lease again: it unfences (``NodeUnfenced``),
  so a false fence never leaves a cluster where nobody serves. The record is read once more
  right before, so a record that moved on while the agent was frozen is never missed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from tandem.agent.apps import ApplicationSet
from tandem.agent.control.base import ControlError
from tandem.agent.executor import StepExecutor
from tandem.agent.holds import read_hold
from tandem.agent.identity.base import NetworkIdentity
from tandem.agent.lease import LeaseKeeper
from tandem.agent.saga_watch import saga_running
from tandem.events.bus import Bus
from tandem.events.cancel import raise_if_cancelled
from tandem.events.catalog import NodeUnfenced
from tandem.events.catalog.roles import NodeUnfencedPayload
from tandem.events.catalog.vocabulary import Role
from tandem.events.envelope import Event
from tandem.events.nodeboard import NodeBoard
from tandem.events.roles import (
    RoleRecord,
    claim_first_role,
    first_role_hint,
    may_write_roles,
    read_role,
)
from tandem.events.subjects import ROLES_BUCKET

log = logging.getLogger(__name__)


class RoleWatch:
    def __init__(
        self,
        bus: Bus,
        cluster: str,
        node: str,
        board: NodeBoard,
        executor: StepExecutor,
        apps: ApplicationSet,
        identity: NetworkIdentity,
        lease: LeaseKeeper,
        *,
        resume_active: bool,
        claim_first: bool = False,
        poll_s: float = 0.5,
        unfence: bool = True,
        emit: Callable[[Event], None] | None = None,
        replicated: bool = False,
        hold_file: Path | None = None,
    ) -> None:
        self.unfence = unfence
        self.emit = emit or (lambda event: None)
        #: The node replicates a folder: it resumes serving only once its source runs.
        self.replicated = replicated
        self.hold_file = hold_file
        self.bus = bus
        self.cluster = cluster
        self.node = node
        self.board = board
        self.executor = executor
        self.apps = apps
        self.identity = identity
        self.lease = lease
        self.resume_active = resume_active
        self.claim_first = claim_first
        self.poll_s = poll_s
        self.record: RoleRecord | None = None
        self.decision = ""
        self._steer_checked_at = float("-inf")
        self._told_first = False

    async def run(self) -> None:
        while True:
            raise_if_cancelled()  # a timed wait may have swallowed a stop
            try:
                kv = await self.bus.kv(ROLES_BUCKET)
                record, _ = await asyncio.wait_for(read_role(kv, self.cluster), 5)
                if (
                    record is None
                    and self.claim_first
                    and not may_write_roles(self.bus.settings.user)
                ):
                    if not self._told_first:
                        log.warning("%s", first_role_hint(self.cluster, self.node))
                        self._told_first = True
                elif record is None and self.claim_first:
                    # First pairing: the node configured to start Active claims epoch 1
                    # (compare-and-set: if another node's claim won, that one holds).
                    record = await asyncio.wait_for(
                        claim_first_role(kv, self.cluster, self.node, "first pairing"), 5
                    )
            except Exception as exc:  # bus away: the lease keeper handles that
                log.debug("role record unreadable: %s", exc)
                record = None
            if record is not None:
                self.record = record
                decision = await self.reconcile(record)
                if decision != self.decision:
                    log.info("%s: %s", self.node, decision)
                    self.decision = decision
            await asyncio.sleep(self.poll_s)

    async def reconcile(self, record: RoleRecord) -> str:
        """Bring the node in line with ``record``; returns what it decided and why."""
        if record.epoch > self.board.epoch:
            self.board.epoch = record.epoch
        if record.active != self.node:
            if self.board.role is Role.PASSIVE:
                return "passive, as the record says"
            why = f"the role record names {record.active} Active at epoch {record.epoch}"
            await self._demote(why)
            return f"demoted: {why}"
        if self.board.fenced:
            if not self.unfence:
                return "fenced: waits for a step or an operator"
            if record.epoch != self.board.fenced_epoch:
                return "fenced: a saga made it Active again: waits for the saga's steps"
            if self.board.steered_epoch >= record.epoch and not await self._steering_ended():
                # A saga stopped its applications or hid it at this epoch (a switchover under
                # way): coming back by itself would serve beside the node the saga moves to.
                return "fenced: a saga is moving it: waits for the saga's steps"
            if not self.lease.held_since(self.lease.fenced_clock):
                return "fenced: waits to hold its lease again"
            return await self._unfence()
        if self.board.role is not None:
            return f"plays {self.board.role}"
        if not self.resume_active:
            return "Active by the record: waits for the orchestrator's steps"
        if self.board.steered_epoch >= record.epoch and not await self._steering_ended():
            # Before this agent restarted, a saga stopped its applications or hid it at this
            # epoch: the saga goes on (or undoes that) with its own steps.
            return "Active by the record, but a saga is moving it: waits for the saga's steps"
        if self.lease.renewals == 0:
            return "Active by the record: waits to hold its lease"
        if self.replicated and self.board.source_ready_epoch < record.epoch:
            # What the applications write must be captured, and the journal of the previous
            # epoch applied first (replicator/node.py): serving earlier would lose both.
            return "Active by the record: waits for its replicator to run as the source"
        await self._resume(record)
        return "resumed as Active"

    async def _steering_ended(self) -> bool:
        """Whether the saga that took this node down ended without moving the role (the
        record still names this node Active at that epoch): its undo never reached the node,
        which then brings itself back. Asked of the stream at most every 2 s."""
        loop = asyncio.get_running_loop()
        if loop.time() < self._steer_checked_at + 2.0:
            return False
        self._steer_checked_at = loop.time()
        if await saga_running(self.bus, self.cluster) is not False:
            return False
        log.warning(
            "%s: the saga that took it down at epoch %s has ended and the role record still "
            "names it Active: its undo never reached this node; it brings itself back",
            self.node, self.board.steered_epoch,
        )  # fmt: skip
        self.executor.release_steer()
        return True

    async def _demote(self, why: str) -> None:
        try:
            await self.identity.hide()
        except Exception as exc:
            log.error("could not hide: %s", exc)
        try:
            await self.apps.stop()
        except ControlError as exc:
            log.error("could not stop every application: %s", exc.message)
        self.executor.assume(Role.PASSIVE, why, self.board.epoch)

    async def _unfence(self) -> str:
        try:
            kv = await self.bus.kv(ROLES_BUCKET)
            fresh, _ = await asyncio.wait_for(read_role(kv, self.cluster), 2)
        except Exception as exc:
            return f"fenced: the role record is unreadable ({exc or type(exc).__name__})"
        if fresh is None or fresh.active != self.node or fresh.epoch != self.board.fenced_epoch:
            # A saga made it Active again (a later epoch): the saga's steps bring it up.
            return "fenced: the role record moved on; waits for the saga's steps"
        refusal = self.lease.refusal()
        if refusal or not self.board.fenced or self.board.steered_epoch >= fresh.epoch:
            return f"fenced: {refusal or 'a step took over'}"
        if self.replicated and self.board.source_ready_epoch < fresh.epoch:
            return "fenced: waits for its replicator to capture the folder again"
        why = self.board.fenced_reason or "no reason recorded"
        self.lease.arm()
        try:
            status = await self.identity.expose()
        except (OSError, ControlError) as exc:
            log.error("%s cannot unfence yet: %s", self.node, exc)
            return f"fenced: cannot expose yet: {exc}"
        actions = [f"exposed: {status.detail}"]
        try:
            actions += [f"started {line}" for line in await self.apps.start()]
        except ControlError as exc:
            actions.append(f"applications not all started: {exc.message}")
        self.board.fenced, self.board.fenced_reason, self.board.fenced_since = False, "", None
        reason = (
            f"the role record still names {self.node} Active at epoch {fresh.epoch}, no saga "
            f"moved it and its lease is held again (it had fenced itself: {why})"
        )
        self.executor.assume(Role.ACTIVE, f"unfenced: {reason}", fresh.epoch)
        self.emit(
            NodeUnfenced(
                cluster=self.cluster,
                node=self.node,
                epoch=fresh.epoch,
                payload=NodeUnfencedPayload(reason=reason, actions=actions),
            )
        )
        log.warning("%s unfenced: %s", self.node, reason)
        return "unfenced: serves again"

    async def _start_unheld(self, epoch: int) -> str:
        """Start the applications, except those an operator stopped at this epoch before the
        agent restarted (tandem.agent.holds): they stay stopped and held."""
        hold = None
        if self.hold_file is not None:
            hold = await asyncio.to_thread(read_hold, self.hold_file)
        held: frozenset[str] = frozenset()
        if hold is not None and hold.epoch == epoch:
            held = hold.applications & set(self.apps.names())
        elif hold is not None and self.hold_file is not None:
            # Taken at another epoch: the role changed since, and with it the hold.
            await asyncio.to_thread(self.hold_file.unlink, True)
        self.board.held_apps = held
        wanted = [name for name in self.apps.names() if name not in held]
        said = [f"{name}: held stopped by an operator" for name in sorted(held)]
        if wanted:
            said = [*await self.apps.start(wanted), *said]
        elif not held:
            said = await self.apps.start()
        return "; ".join(said) or "no applications"

    async def _resume(self, record: RoleRecord) -> None:
        refusal = self.lease.refusal()
        if refusal:
            log.info("%s cannot resume as Active yet: %s", self.node, refusal)
            return
        self.lease.arm()
        try:
            status = await self.identity.expose()
        except (OSError, ControlError) as exc:  # e.g. the public port is still held, an
            # address refused, a DNS name not confirmed: try again next round
            log.error("%s cannot resume as Active yet: %s", self.node, exc)
            return
        try:
            detail = await self._start_unheld(record.epoch)
        except ControlError as exc:
            detail = f"applications not all started: {exc.message}"
            log.error("%s: %s", self.node, detail)
        self.executor.assume(
            Role.ACTIVE,
            f"Active at epoch {record.epoch} as the agent started: {status.detail}; {detail}",
            record.epoch,
        )
