"""Running a saga: each step's start, end and failure is an event; compensations run in
reverse; a saga interrupted by a crash resumes at the step it had reached.

A step's command carries the idempotency key ``<saga>:<index>`` (an undo ``<saga>:<index>:undo``),
so resending it after a crash is answered from the node's memory or, after the node itself
restarted, carried out again by an idempotent step. The pivot (the role change) is a
compare-and-set that recognises its own earlier success. A failover's fence step is carried
out here too, by the ``Fencer`` (``fencing.py``), and is not retried: it waits within its own
deadline, and when it fails the new Active stays unexposed for an operator.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from tandem.events.bus import Bus
from tandem.events.catalog import (
    AlertRaised,
    ApplyReceiveQueue,
    DrainSendQueue,
    Expose,
    Hide,
    RoleChanged,
    SagaCompleted,
    SagaFailed,
    SagaStepCompleted,
    SagaStepFailed,
    SagaStepStarted,
    StartApplications,
    StartIntercepting,
    StopApplications,
    StopIntercepting,
)
from tandem.events.catalog.alerts import AlertRaisedPayload
from tandem.events.catalog.commands import ApplicationsPayload, StepPayload
from tandem.events.catalog.roles import RoleChangedPayload
from tandem.events.catalog.sagas import (
    SagaEndedPayload,
    SagaStepCompletedPayload,
    SagaStepFailedPayload,
    SagaStepPayload,
    SagaStepSpec,
)
from tandem.events.catalog.vocabulary import Severity
from tandem.events.envelope import Event
from tandem.events.errors import CasConflictError, CommandFailedError
from tandem.events.kv import compare_and_set
from tandem.events.roles import RoleRecord, read_role
from tandem.events.rpc import send_command
from tandem.events.subjects import ROLES_BUCKET, role_key
from tandem.orchestrator.fencing import FenceFailed, Fencer
from tandem.orchestrator.groups import MEMBER_SWITCH_BACK, MEMBER_SWITCHOVER
from tandem.orchestrator.plans import CHANGE_ROLE, FENCE
from tandem.orchestrator.state import SagaRecord

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
    pass


class SagaRunner:
    def __init__(
        self,
        bus: Bus,
        instance: str,
        *,
        still_leader: Callable[[], bool],
        forward_retries: int = 3,
        retry_pause_s: float = 1.0,
        transport_slack_s: float = 5.0,
        fencer: Fencer | None = None,
    ) -> None:
        self.bus = bus
        self.instance = instance
        self.still_leader = still_leader
        self.forward_retries = forward_retries
        self.retry_pause_s = retry_pause_s
        self.transport_slack_s = transport_slack_s
        self.fencer = fencer
        self.running: dict[str, asyncio.Task[str]] = {}
        #: Group sagas: run a member's switchover (or move it back) as a child saga and
        #: return how it ended; set by the orchestrator.
        self.member_step: Callable[[SagaRecord, SagaStepSpec, bool], Awaitable[str]] | None = None

    def start(self, saga: SagaRecord) -> asyncio.Task[str]:
        """Run (or resume) ``saga`` in the background, once per process."""
        task = self.running.get(saga.id)
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self.execute(saga))
            self.running[saga.id] = task
        return task

    async def _publish(self, saga: SagaRecord, event_cls: Any, payload: Any, epoch: int) -> None:
        event: Event = event_cls(
            cluster=saga.cluster,
            node=self.instance,
            epoch=epoch,
            correlation_id=saga.id,
            payload=payload,
        )
        for attempt in range(10):
            try:
                await self.bus.publish(event, timeout=5)
                return
            except Exception as exc:  # the same id: a retry is stored once
                log.warning("saga %s: event not stored (%s), retrying", saga.id, exc)
                await asyncio.sleep(min(0.2 * 2**attempt, 5))
        raise RuntimeError(f"saga {saga.id}: the bus does not store events")

    async def execute(self, saga: SagaRecord) -> str:
        done = saga.completed_steps()
        pivoted = any(saga.plan[i].pivot for i in done)
        for index, spec in enumerate(saga.plan):
            if index in done:
                continue
            if not self.still_leader():
                return "no longer the leader: the new leader resumes this saga"
            # Fencing retries within its own deadline: waiting it out again only delays the alert.
            forward = (pivoted or spec.pivot) and spec.command != FENCE
            tries = 1 + (self.forward_retries if forward else 0)
            reason = ""
            for attempt in range(1, tries + 1):
                ok, reason = await self._run_step(saga, index, spec, attempt)
                if ok:
                    break
                if attempt < tries:
                    await asyncio.sleep(self.retry_pause_s)
            else:
                return await self._fail(saga, index, spec, reason, pivoted)
            done.add(index)
            pivoted = pivoted or spec.pivot
        why = f"{saga.kind} of {saga.cluster} to {saga.to_node} completed"
        await self._publish(
            saga, SagaCompleted, SagaEndedPayload(saga_id=saga.id, reason=why), saga.plan[-1].epoch
        )
        log.info("saga %s: %s", saga.id, why)
        return why

    async def _run_step(
        self, saga: SagaRecord, index: int, spec: SagaStepSpec, attempt: int
    ) -> tuple[bool, str]:
        step = SagaStepPayload(
            saga_id=saga.id,
            index=index,
            step=spec.name,
            target_node=spec.node,
            command=spec.command,
        )
        await self._publish(saga, SagaStepStarted, step, spec.epoch)
        try:
            reason = await self._carry_out(saga, index, spec)
        except StepFailed as exc:
            reason = str(exc)
            log.warning("saga %s step %s (%s) failed: %s", saga.id, index, spec.name, reason)
            failed = SagaStepFailedPayload(
                **step.model_dump(), reason=f"attempt {attempt}: {reason}", compensating=False
            )
            await self._publish(saga, SagaStepFailed, failed, spec.epoch)
            return False, reason
        completed = SagaStepCompletedPayload(**step.model_dump(), result={"reason": reason})
        await self._publish(saga, SagaStepCompleted, completed, spec.epoch)
        return True, reason

    async def _carry_out(self, saga: SagaRecord, index: int, spec: SagaStepSpec) -> str:
        if spec.command == CHANGE_ROLE:
            return await self.change_role(saga, spec)
        if spec.command == MEMBER_SWITCHOVER:
            return await self._member(saga, spec, back=False)
        if spec.command == FENCE:
            if self.fencer is None:
                raise StepFailed("fencing is not available here")
            try:
                return await self.fencer.fence(saga, spec, self._publish)
            except FenceFailed as exc:
                raise StepFailed(str(exc)) from None
        return await self._send(saga, spec, spec.command, f"{saga.id}:{index}")

    async def _member(self, saga: SagaRecord, spec: SagaStepSpec, *, back: bool) -> str:
        if self.member_step is None:
            raise StepFailed("group sagas are not available here")
        return await self.member_step(saga, spec, back)

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
        try:
            result = await send_command(
                self.bus, cmd, timeout=spec.timeout_s + self.transport_slack_s
            )
        except CommandFailedError as exc:
            raise StepFailed(str(exc)) from None
        if not result.ok:
            raise StepFailed(f"{spec.node} answered: {result.reason}")
        return result.reason

    async def change_role(self, saga: SagaRecord, spec: SagaStepSpec) -> str:
        """The pivot: ``spec.node`` becomes Active at ``spec.epoch`` by compare-and-set."""
        kv = await self.bus.kv(ROLES_BUCKET)
        record, revision = await read_role(kv, saga.cluster)
        if record is not None and record.active == spec.node and record.epoch == spec.epoch:
            return f"{spec.node} is already Active at epoch {spec.epoch}"
        if record is None or record.epoch != spec.epoch - 1:
            now = f"{record.active} at epoch {record.epoch}" if record else "no record"
            raise StepFailed(
                f"the role record moved on ({now}); this saga expected epoch {spec.epoch - 1}"
            )
        new = RoleRecord(active=spec.node, epoch=spec.epoch, reason=f"{saga.kind} {saga.id}")
        try:
            await compare_and_set(
                kv, role_key(saga.cluster), new.model_dump_json().encode(), revision
            )
        except CasConflictError as exc:
            raise StepFailed(f"lost the compare-and-set on the role record: {exc}") from None
        await self._publish(
            saga,
            RoleChanged,
            RoleChangedPayload(
                active_node=spec.node,
                previous_active=record.active,
                new_epoch=spec.epoch,
                reason=f"{saga.kind} {saga.id}: {saga.reason}" if saga.reason else saga.kind,
            ),
            spec.epoch,
        )
        return f"{spec.node} is Active at epoch {spec.epoch} (was {record.active})"

    async def _fail(
        self, saga: SagaRecord, index: int, spec: SagaStepSpec, reason: str, pivoted: bool
    ) -> str:
        if spec.command == FENCE:  # the fencer raised fence.failed
            why = (
                f"step {index} ({spec.name}) failed after the role changed: {reason}; "
                f"{saga.to_node} was not exposed: it needs an operator"
            )
        elif pivoted or spec.pivot:
            why = (
                f"step {index} ({spec.name}) failed after the role changed: {reason}; "
                "the new Active needs an operator"
            )
            await self._publish(
                saga,
                AlertRaised,
                AlertRaisedPayload(code="saga.stuck", severity=Severity.CRITICAL, message=why),
                spec.epoch,
            )
        else:
            undone = await self._compensate(saga, index)
            why = f"step {index} ({spec.name}) failed: {reason}; {undone}"
        await self._publish(
            saga, SagaFailed, SagaEndedPayload(saga_id=saga.id, reason=why), spec.epoch
        )
        log.error("saga %s failed: %s", saga.id, why)
        return why

    async def _compensate(self, saga: SagaRecord, failed_index: int) -> str:
        undone: list[str] = []
        for index in reversed(range(failed_index)):
            spec = saga.plan[index]
            if spec.compensation is None:
                continue
            step = SagaStepPayload(
                saga_id=saga.id,
                index=index,
                step=f"undo {spec.name}",
                target_node=spec.node,
                command=spec.compensation,
            )
            try:
                if spec.compensation == MEMBER_SWITCH_BACK:
                    reason = await self._member(saga, spec, back=True)
                else:
                    reason = await self._send(
                        saga, spec, spec.compensation, f"{saga.id}:{index}:undo"
                    )
            except StepFailed as exc:
                failed = SagaStepFailedPayload(
                    **step.model_dump(), reason=str(exc), compensating=True
                )
                await self._publish(saga, SagaStepFailed, failed, spec.epoch)
                undone.append(f"undo of {spec.name} failed: {exc}")
                continue
            result = {"reason": reason, "compensation": True}
            await self._publish(
                saga,
                SagaStepCompleted,
                SagaStepCompletedPayload(**step.model_dump(), result=result),
                spec.epoch,
            )
            undone.append(f"undid {spec.name}")
        return "compensated: " + (", ".join(undone) if undone else "nothing to undo")
