"""Carrying out one saga step that talks to the bus: a command sent to a node, or the pivot
(the role change by compare-and-set).

A command that got no answer (no agent listening, no answer in time, the bus electing a
leader or reconnecting) is sent again with the same idempotency key until the step's
deadline (``timeout_s`` + the transport slack): the node replays its first answer for a
repeated key, and a node that restarted carries the idempotent step out again. An answered
failure is final for that attempt.

Before the pivot a step addressed to a node that is *gone* (no heartbeat and no lease
renewal for its failover timeout) is given up at once: that node can no longer answer in
time, and waiting out the step's deadline would only hold off the failover that replaces it
(a switchover whose old Active died mid-drain kept its cluster down for the whole drain
deadline). The same holds for the undo of such a step.

The pivot retries a bus failure within the same deadline: a compare-and-set whose answer was
lost is recognised on the next read (the record already names the target at the new epoch).
Its ``RoleChanged`` has an id made from the saga's, so publishing it again (after such a
loss, or by a new leader) is stored once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from tandem.events.bus import Bus
from tandem.events.cancel import raise_if_cancelled
from tandem.events.catalog import (
    ApplyReceiveQueue,
    DrainSendQueue,
    Expose,
    Hide,
    RoleChanged,
    StartApplications,
    StartIntercepting,
    StopApplications,
    StopIntercepting,
)
from tandem.events.catalog.commands import ApplicationsPayload, StepPayload
from tandem.events.catalog.roles import RoleChangedPayload
from tandem.events.catalog.sagas import SagaStepSpec
from tandem.events.envelope import Event
from tandem.events.errors import CasConflictError, CommandFailedError
from tandem.events.kv import compare_and_set
from tandem.events.roles import RoleRecord, read_role
from tandem.events.rpc import send_command
from tandem.events.subjects import ROLES_BUCKET, role_key
from tandem.events.transient import describe, is_transient
from tandem.orchestrator.publishing import LeadershipLost
from tandem.orchestrator.state_records import SagaRecord

log = logging.getLogger(__name__)

COMMANDS: dict[str, Any] = {
    c.__name__: c
    for c in (
        StopApplications,
        DrainSendQueue,
        Hide,
        ApplyReceiveQueue,
        Expose,
        StartIntercepting,
        StartApplications,
        StopIntercepting,
    )
}
APP_COMMANDS = {"StopApplications", "StartApplications"}


class StepFailed(Exception):
    """A step did not succeed; ``str()`` is the step's reason.

    ``answered``: the node answered the failure (a retry needs a new idempotency key, the
    old one only replays it); ``final``: trying again cannot help (the role record moved on).
    """

    def __init__(self, reason: str, *, answered: bool = False, final: bool = False) -> None:
        super().__init__(reason)
        self.answered = answered
        self.final = final


def role_changed_id(saga_id: str) -> str:
    return f"{saga_id}:role-changed"


class StepCommands:
    def __init__(
        self,
        bus: Bus,
        instance: str,
        *,
        still_leader: Callable[[], bool],
        publish: Callable[[SagaRecord, Event], Awaitable[None]],
        transport_slack_s: float,
        command_attempt_s: float,
        gone: Callable[[str, str], str] | None = None,
        gone_poll_s: float = 0.2,
    ) -> None:
        self.bus = bus
        #: Why ``node`` of ``cluster`` is gone, or '' (``Liveness.gone``).
        self.gone = gone
        self.gone_poll_s = gone_poll_s
        self.instance = instance
        self.still_leader = still_leader
        self.publish = publish
        self.transport_slack_s = transport_slack_s
        self.command_attempt_s = command_attempt_s

    def deadline_s(self, spec: SagaStepSpec) -> float:
        """How long a step may take, bus faults included: the node's own bound for it plus
        the transport slack (covers a JetStream leader election and an agent restart)."""
        return spec.timeout_s + self.transport_slack_s

    async def send(
        self,
        saga: SagaRecord,
        spec: SagaStepSpec,
        command: str,
        key: str,
        *,
        unless_gone: bool = False,
    ) -> str:
        """Send the step's command until answered or its deadline; with ``unless_gone``,
        give up as soon as the addressed node is gone."""
        if not unless_gone or self.gone is None:
            return await self._send(saga, spec, command, key)
        why = self.gone(saga.cluster, spec.node)
        if why:
            raise StepFailed(f"{spec.node} is gone ({why}); {command} not sent")
        sending = asyncio.ensure_future(self._send(saga, spec, command, key))
        try:
            while True:
                done, _ = await asyncio.wait({sending}, timeout=self.gone_poll_s)
                if done:
                    return sending.result()
                why = self.gone(saga.cluster, spec.node)
                if why:
                    raise StepFailed(f"{spec.node} is gone while waiting for {command}: {why}")
        finally:
            if not sending.done():
                sending.cancel()
                await asyncio.gather(sending, return_exceptions=True)

    async def _send(self, saga: SagaRecord, spec: SagaStepSpec, command: str, key: str) -> str:
        cls = COMMANDS[command]
        payload_cls = ApplicationsPayload if command in APP_COMMANDS else StepPayload
        cmd = cls(
            cluster=saga.cluster,
            node=spec.node,
            epoch=spec.epoch,
            idempotency_key=key,
            correlation_id=saga.id,
            payload=payload_cls(reason=f"{saga.kind} {saga.id}", timeout_s=spec.timeout_s),
        )
        deadline = self.deadline_s(spec)
        try:
            result = await send_command(
                self.bus,
                cmd,
                # A repeat joins the node's first run of that key: waiting less than the
                # whole step per request costs nothing and finds a lost answer sooner.
                timeout=min(deadline, max(self.command_attempt_s, 1.0)),
                retry_for_s=deadline,
                keep_going=self.still_leader,
            )
        except CommandFailedError as exc:
            raise StepFailed(str(exc)) from None
        if not result.ok:
            raise StepFailed(f"{spec.node} answered: {result.reason}", answered=True)
        return result.reason

    async def change_role(self, saga: SagaRecord, spec: SagaStepSpec) -> str:
        """The pivot: ``spec.node`` becomes Active at ``spec.epoch`` by compare-and-set."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + self.deadline_s(spec)
        delay, failures = 0.1, 0
        while True:
            raise_if_cancelled()  # a timed wait may have swallowed a stop
            try:
                said = await self._change_role_once(saga, spec)
            except (StepFailed, LeadershipLost):
                raise
            except Exception as exc:
                why = describe(exc)
                if not is_transient(exc) or loop.time() + delay >= give_up:
                    raise StepFailed(f"the role record could not be changed: {why}") from None
                if not self.still_leader():
                    raise LeadershipLost(f"saga {saga.id}: role change ({why})") from None
                failures += 1
                level = logging.WARNING if failures == 1 else logging.DEBUG
                log.log(level, "saga %s: role record unreachable (%s); retrying", saga.id, why)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            if failures:
                log.info("saga %s: role record reached after %s retries", saga.id, failures)
            return said

    async def role_record(self, saga: SagaRecord) -> RoleRecord | None:
        """The cluster's role record now; None when it cannot be read (said at info)."""
        try:
            kv = await asyncio.wait_for(self.bus.kv(ROLES_BUCKET), 5)
            record, _ = await asyncio.wait_for(read_role(kv, saga.cluster), 5)
        except Exception as exc:
            log.info("saga %s: role record not read (%s)", saga.id, describe(exc))
            return None
        return record

    async def _change_role_once(self, saga: SagaRecord, spec: SagaStepSpec) -> str:
        kv = await asyncio.wait_for(self.bus.kv(ROLES_BUCKET), 5)
        record, revision = await asyncio.wait_for(read_role(kv, saga.cluster), 5)
        if record is not None and record.active == spec.node and record.epoch == spec.epoch:
            # Ours (an earlier attempt whose answer was lost, or a previous leader's): make
            # sure its RoleChanged is stored too (the same id: stored once).
            await self._role_changed(saga, spec, saga.from_node)
            return f"{spec.node} is already Active at epoch {spec.epoch}"
        if record is None or record.epoch != spec.epoch - 1:
            now = f"{record.active} at epoch {record.epoch}" if record else "no record"
            raise StepFailed(
                f"the role record moved on ({now}); this saga expected epoch {spec.epoch - 1}",
                final=True,
            )
        new = RoleRecord(active=spec.node, epoch=spec.epoch, reason=f"{saga.kind} {saga.id}")
        try:
            await asyncio.wait_for(
                compare_and_set(
                    kv, role_key(saga.cluster), new.model_dump_json().encode(), revision
                ),
                5,
            )
        except CasConflictError:
            # Another writer, or our own write whose answer was lost: the next read tells.
            record_now, _ = await asyncio.wait_for(read_role(kv, saga.cluster), 5)
            if record_now == new:
                await self._role_changed(saga, spec, record.active)
                return f"{spec.node} is Active at epoch {spec.epoch} (was {record.active})"
            raise StepFailed(
                "lost the compare-and-set on the role record to another writer", final=True
            ) from None
        await self._role_changed(saga, spec, record.active)
        return f"{spec.node} is Active at epoch {spec.epoch} (was {record.active})"

    async def _role_changed(self, saga: SagaRecord, spec: SagaStepSpec, was: str | None) -> None:
        event = RoleChanged(
            id=role_changed_id(saga.id),
            cluster=saga.cluster,
            node=self.instance,
            epoch=spec.epoch,
            correlation_id=saga.id,
            payload=RoleChangedPayload(
                active_node=spec.node,
                previous_active=was,
                new_epoch=spec.epoch,
                reason=f"{saga.kind} {saga.id}: {saga.reason}" if saga.reason else saga.kind,
            ),
        )
        await self.publish(saga, event)
