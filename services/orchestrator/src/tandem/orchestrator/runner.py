"""Running a saga: each step's start, end and failure is an event; compensations run in
reverse; a saga interrupted by a crash resumes at the step it had reached.

A step's command carries the idempotency key ``<saga>:<index>`` (an undo ``<saga>:<index>:undo``),
so resending it after a crash, or after it got no answer because the bus was electing a
leader or reconnecting (``steps.py``), is answered from the node's memory or, after the node
itself restarted, carried out again by an idempotent step. The pivot (the role change) is a
compare-and-set that recognises its own earlier success.

Before the pivot a failed step is compensated. After it the saga only goes forward: a
failed step is tried again with backoff (after an answered failure under a new key
``<saga>:<index>:try<n>``, since the old one only replays that answer) for at most
``forward_budget_s``; then ``saga.stuck`` is raised and the saga ends ``needs_operator``
(``SagaFailed`` with ``needs_operator``). A failover's fence step is carried out here too,
by the ``Fencer`` (``fencing.py``), and is not retried: it waits within its own deadline, and
when it fails the new Active stays unexposed for an operator.

Every event of a saga is stored before the saga goes on (``Publisher.stored``). When this
orchestrator loses the leadership meanwhile (the bus away for longer than the lease), the
saga stops where it is, saying so; the next leader, or this one when it leads again,
resumes it from the stream.

How a saga ends short of completing (compensation, the stop for an operator, a cancel, a
superseded saga) is ``saga_endings.py``'s.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from tandem.events.bus import Bus
from tandem.events.cancel import raise_if_cancelled
from tandem.events.catalog import (
    AlertCleared,
    SagaCompleted,
    SagaStepCompleted,
    SagaStepFailed,
    SagaStepStarted,
)
from tandem.events.catalog.alerts import AlertClearedPayload
from tandem.events.catalog.sagas import (
    SagaEndedPayload,
    SagaStepCompletedPayload,
    SagaStepFailedPayload,
    SagaStepPayload,
    SagaStepSpec,
)
from tandem.events.envelope import Event
from tandem.events.roles import RoleRecord
from tandem.events.transient import describe, is_transient
from tandem.orchestrator.fencing import FenceFailed, Fencer
from tandem.orchestrator.groups import MEMBER_SWITCHOVER
from tandem.orchestrator.plans import CHANGE_ROLE, FENCE
from tandem.orchestrator.publishing import LeadershipLost, Publisher
from tandem.orchestrator.saga_endings import SagaEndings
from tandem.orchestrator.state_records import AlertRecord, SagaRecord
from tandem.orchestrator.steps import COMMANDS, StepCommands, StepFailed

__all__ = ["COMMANDS", "SagaRunner", "StepFailed"]

log = logging.getLogger(__name__)


class SagaRunner(SagaEndings):
    def __init__(
        self,
        bus: Bus,
        instance: str,
        *,
        still_leader: Callable[[], bool],
        forward_budget_s: float = 120.0,
        retry_pause_s: float = 1.0,
        max_retry_pause_s: float = 10.0,
        transport_slack_s: float = 5.0,
        command_attempt_s: float = 10.0,
        fencer: Fencer | None = None,
        publisher: Publisher | None = None,
        gone: Callable[[str, str], str] | None = None,
    ) -> None:
        self.bus = bus
        self.instance = instance
        self.still_leader = still_leader
        #: After the pivot: how long a failing step is tried again before the saga stops
        #: for an operator (from its first attempt in this process).
        self.forward_budget_s = forward_budget_s
        self.retry_pause_s = retry_pause_s
        self.max_retry_pause_s = max_retry_pause_s
        self.fencer = fencer
        self.publisher = publisher or Publisher(bus)
        self.steps = StepCommands(
            bus,
            instance,
            still_leader=still_leader,
            publish=self._store,
            transport_slack_s=transport_slack_s,
            command_attempt_s=command_attempt_s,
            gone=gone,
        )
        self.running: dict[str, asyncio.Task[str]] = {}
        #: The step each saga run here has reached (set before the step's first await: a
        #: cancel is judged against it, ``saga_control.cancel_refusal``).
        self.at: dict[str, int] = {}
        #: Group sagas: run a member's switchover (or move it back) as a child saga and
        #: return how it ended; set by the orchestrator.
        self.member_step: Callable[[SagaRecord, SagaStepSpec, bool], Awaitable[str]] | None = None
        #: The open alerts a saga resolves by completing (``ClusterState.resolved_by``); set
        #: by the orchestrator.
        self.resolved_alerts: Callable[[SagaRecord], list[AlertRecord]] | None = None

    def start(self, saga: SagaRecord) -> asyncio.Task[str]:
        """Run (or resume) ``saga`` in the background, once per process at a time."""
        task = self.running.get(saga.id)
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self.execute(saga))
            task.add_done_callback(lambda t: _said_how_it_ended(saga.id, t))
            self.running[saga.id] = task
        return task

    async def _clear_resolved(self, saga: SagaRecord, why: str) -> None:
        """Clear what the completed saga fixed (a ``saga.stuck``, a ``fence.failed``...),
        each as raised (its node and subject), so that whoever follows alerts sees it end."""
        for alert in self.resolved_alerts(saga) if self.resolved_alerts else []:
            cleared = AlertClearedPayload(
                code=alert.code, subject=alert.subject, reason=f"resolved: {why} ({saga.id})"
            )
            event = AlertCleared(
                cluster=saga.cluster,
                node=alert.node,
                epoch=saga.plan[-1].epoch,
                correlation_id=saga.id,
                payload=cleared,
            )
            await self._store(saga, event)

    async def _store(self, saga: SagaRecord, event: Event) -> None:
        await self.publisher.stored(
            event, keep_going=self.still_leader, what=f"saga {saga.id}: {event.type}"
        )

    async def _publish(self, saga: SagaRecord, event_cls: Any, payload: Any, epoch: int) -> None:
        event: Event = event_cls(
            cluster=saga.cluster,
            node=self.instance,
            epoch=epoch,
            correlation_id=saga.id,
            payload=payload,
        )
        await self._store(saga, event)

    async def execute(self, saga: SagaRecord) -> str:
        """Run ``saga`` from the step it reached; returns how it ended (or why it stopped)."""
        try:
            return await self._execute(saga)
        except LeadershipLost as exc:
            why = f"stopped, the next leader resumes it: {exc}"
            log.warning("saga %s: %s", saga.id, why)
            return why
        finally:
            self.at.pop(saga.id, None)

    def _require_leader(self, saga: SagaRecord, what: str) -> None:
        if not self.still_leader():
            raise LeadershipLost(f"saga {saga.id}: no longer the leader before {what}")

    async def _execute(self, saga: SagaRecord) -> str:
        done = saga.completed_steps()
        pivoted = any(saga.plan[i].pivot for i in done)
        pivot = _pivot_of(saga)
        role_changed = False  # the role record shows the pivot done (its events not folded)
        record = await self.steps.role_record(saga) if pivot is not None else None
        if pivot is not None and record is not None:
            superseded = _superseded(saga.plan[pivot], record)
            if superseded:
                return await self._end_superseded(saga, superseded)
            if not pivoted and (record.active, record.epoch) == (
                saga.plan[pivot].node, saga.plan[pivot].epoch,
            ):  # fmt: skip
                done |= self._done_before(saga, pivot)
                role_changed = True
        for index, spec in enumerate(saga.plan):
            if index in done:
                continue
            if saga.cancel and not (pivoted or role_changed):  # before the role change
                return await self._cancelled(saga, index)
            if saga.cancel and spec.pivot:
                log.warning("saga %s: %s, but the role record shows its role change done: "
                            "it goes forward", saga.id, saga.cancel)  # fmt: skip
            self.at[saga.id] = index
            self._require_leader(saga, f"step {index} ({spec.name})")
            # Fencing retries within its own deadline: waiting it out again only delays the alert.
            forward = (pivoted or spec.pivot) and spec.command != FENCE
            ok, reason = await self._attempts(saga, index, spec, forward)
            if not ok and forward and pivot is not None:
                record = await self.steps.role_record(saga)
                superseded = _superseded(saga.plan[pivot], record) if record else ""
                if superseded:
                    return await self._end_superseded(saga, superseded)
            if not ok:
                return await self._fail(saga, index, spec, reason, pivoted)
            done.add(index)
            pivoted = pivoted or spec.pivot
        why = f"{saga.kind} of {saga.cluster} to {saga.to_node} completed"
        await self._clear_resolved(saga, why)
        await self._publish(
            saga, SagaCompleted, SagaEndedPayload(saga_id=saga.id, reason=why), saga.plan[-1].epoch
        )
        log.info("saga %s: %s", saga.id, why)
        return why

    def _done_before(self, saga: SagaRecord, pivot: int) -> set[int]:
        """The steps before the role change, which the role record shows done: a leader
        that resumes a saga whose previous leader's step events are not stored yet (still in
        its outbox) must not run them again (they address the old Active, perhaps gone by
        now, and would fail a saga that in fact went through). The role change itself runs
        again: it recognises its own success and stores its events."""
        log.info(
            "saga %s: the role record shows its role change done (%s Active at epoch %s): "
            "going on from it (step %s)",
            saga.id, saga.plan[pivot].node, saga.plan[pivot].epoch, pivot,
        )  # fmt: skip
        return set(range(pivot))

    async def _attempts(
        self, saga: SagaRecord, index: int, spec: SagaStepSpec, forward: bool
    ) -> tuple[bool, str]:
        """Run a step; going forward, again with backoff within the forward budget."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        pause, attempt, fresh_keys = self.retry_pause_s, 0, 0
        while True:
            raise_if_cancelled()  # a timed wait may have swallowed a stop
            attempt += 1
            key = f"{saga.id}:{index}" + (f":r{saga.resumes}" if saga.resumes else "")
            key += f":try{fresh_keys + 1}" if fresh_keys else ""  # a resume asks anew
            try:
                reason = await self._run_step(saga, index, spec, attempt, key, forward)
                return True, reason
            except StepFailed as exc:
                reason = str(exc)
                if not forward or exc.final:
                    return False, reason
                fresh_keys += 1 if exc.answered else 0
            spent = loop.time() - started
            if spent + pause > self.forward_budget_s:
                return False, (
                    f"{reason} (tried {attempt} times over {spent:.0f}s, "
                    f"forward budget {self.forward_budget_s:g}s)"
                )
            log.info(
                "saga %s step %s (%s): past the pivot, trying again in %.1fs",
                saga.id,
                index,
                spec.name,
                pause,
            )
            await asyncio.sleep(pause)
            pause = min(pause * 2, self.max_retry_pause_s)
            self._require_leader(saga, f"attempt {attempt + 1} of step {index} ({spec.name})")

    async def _run_step(
        self,
        saga: SagaRecord,
        index: int,
        spec: SagaStepSpec,
        attempt: int,
        key: str,
        forward: bool,
    ) -> str:
        """One attempt: its events, and its reason; ``StepFailed`` after the failure event."""
        step = SagaStepPayload(
            saga_id=saga.id,
            index=index,
            step=spec.name,
            target_node=spec.node,
            command=spec.command,
        )
        await self._publish(saga, SagaStepStarted, step, spec.epoch)
        try:
            reason = await self._carry_out(saga, spec, key, forward)
        except StepFailed as exc:
            failure: StepFailed = exc
        except (LeadershipLost, asyncio.CancelledError):
            raise
        except Exception as exc:  # a bus error or a bug: the step fails with the reason
            log.warning(
                "saga %s step %s: %s", saga.id, index, describe(exc), exc_info=not is_transient(exc)
            )
            failure = StepFailed(describe(exc))
        else:
            completed = SagaStepCompletedPayload(**step.model_dump(), result={"reason": reason})
            await self._publish(saga, SagaStepCompleted, completed, spec.epoch)
            return reason
        log.warning("saga %s step %s (%s) failed: %s", saga.id, index, spec.name, failure)
        failed = SagaStepFailedPayload(
            **step.model_dump(), reason=f"attempt {attempt}: {failure}", compensating=False
        )
        await self._publish(saga, SagaStepFailed, failed, spec.epoch)
        raise failure

    async def _carry_out(
        self, saga: SagaRecord, spec: SagaStepSpec, key: str, forward: bool
    ) -> str:
        if spec.command == CHANGE_ROLE:
            return await self.steps.change_role(saga, spec)
        if spec.command == MEMBER_SWITCHOVER:
            return await self._member(saga, spec, back=False)
        if spec.command == FENCE:
            if self.fencer is None:
                raise StepFailed("fencing is not available here")
            try:
                return await self.fencer.fence(saga, spec, self._publish)
            except FenceFailed as exc:
                raise StepFailed(str(exc)) from None
        # Before the pivot a gone node fails its step at once (``steps.py``).
        return await self.steps.send(saga, spec, spec.command, key, unless_gone=not forward)

    async def _member(self, saga: SagaRecord, spec: SagaStepSpec, *, back: bool) -> str:
        if self.member_step is None:
            raise StepFailed("group sagas are not available here")
        return await self.member_step(saga, spec, back)

    async def change_role(self, saga: SagaRecord, spec: SagaStepSpec) -> str:
        """The pivot: ``spec.node`` becomes Active at ``spec.epoch`` by compare-and-set."""
        return await self.steps.change_role(saga, spec)


def _pivot_of(saga: SagaRecord) -> int | None:
    return next((i for i, spec in enumerate(saga.plan) if spec.command == CHANGE_ROLE), None)


def _superseded(pivot: SagaStepSpec, record: RoleRecord) -> str:
    """Why the role record says a later role change replaced this saga's, or ''."""
    if record.epoch > pivot.epoch:
        return (
            f"superseded: the role record names {record.active} Active at epoch "
            f"{record.epoch}, past this saga's epoch {pivot.epoch} (a later saga moved the cluster)"
        )
    return ""


def _said_how_it_ended(saga_id: str, task: asyncio.Task[str]) -> None:
    """A saga task that ended by an error says so (it never ends silently)."""
    if task.cancelled():
        log.info("saga %s: stopped (this orchestrator is stopping)", saga_id)
        return
    exc = task.exception()
    if exc is not None:
        log.error("saga %s stopped by an error: %s", saga_id, describe(exc), exc_info=exc)
