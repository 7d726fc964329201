"""How a saga ends short of completing, for ``SagaRunner`` (a mixin): a failed step before
the pivot undoes what the saga did, in reverse (compensation); one after it stops the saga
for an operator with the ``saga.stuck`` alert; an operator's cancel (before the pivot) undoes
and ends it; a saga a later role change superseded ends without acting.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from tandem.events.catalog import AlertRaised, SagaFailed, SagaStepCompleted, SagaStepFailed
from tandem.events.catalog.alerts import AlertRaisedPayload
from tandem.events.catalog.sagas import (
    SagaEndedPayload,
    SagaStepCompletedPayload,
    SagaStepFailedPayload,
    SagaStepPayload,
    SagaStepSpec,
)
from tandem.events.catalog.vocabulary import Severity
from tandem.orchestrator.groups import MEMBER_SWITCH_BACK
from tandem.orchestrator.plans import FENCE
from tandem.orchestrator.state_records import SagaRecord
from tandem.orchestrator.steps import StepCommands, StepFailed

# The runner's logger: these lines are the runner's, as they were before this module split off.
log = logging.getLogger("tandem.orchestrator.runner")

STUCK = "saga.stuck"


class SagaEndings:
    """A failed, cancelled or superseded saga's end (a mixin: it uses what ``SagaRunner`` sets)."""

    steps: StepCommands

    if TYPE_CHECKING:  # provided by SagaRunner

        async def _publish(
            self, saga: SagaRecord, event_cls: Any, payload: Any, epoch: int
        ) -> None: ...
        def _require_leader(self, saga: SagaRecord, what: str) -> None: ...
        async def _member(self, saga: SagaRecord, spec: SagaStepSpec, *, back: bool) -> str: ...

    async def _cancelled(self, saga: SagaRecord, index: int) -> str:
        """An operator cancelled the saga before step ``index`` (before its pivot): undo
        what it did, in reverse, and end it."""
        why = f"{saga.cancel}; before step {index} ({saga.plan[index].name}); "
        why += await self._compensate(saga, index)
        ended = SagaEndedPayload(saga_id=saga.id, reason=why)
        await self._publish(saga, SagaFailed, ended, saga.plan[index].epoch)
        log.warning("saga %s: %s", saga.id, why)
        return why

    async def _end_superseded(self, saga: SagaRecord, why: str) -> str:
        """A later saga moved the cluster past this one's epoch (this one's start was not
        known to the leader that ran it, e.g. still in a killed leader's outbox): nothing to
        undo or repair here, the cluster is that saga's now."""
        epoch = saga.plan[-1].epoch
        await self._publish(saga, SagaFailed, SagaEndedPayload(saga_id=saga.id, reason=why), epoch)
        log.warning("saga %s: %s", saga.id, why)
        return why

    async def _fail(
        self, saga: SagaRecord, index: int, spec: SagaStepSpec, reason: str, pivoted: bool
    ) -> str:
        stuck = pivoted or spec.pivot
        if spec.command == FENCE:  # the fencer raised fence.failed
            why = (
                f"step {index} ({spec.name}) failed after the role changed: {reason}; "
                f"{saga.to_node} was not exposed: it needs an operator"
            )
        elif stuck:
            why = (
                f"step {index} ({spec.name}) failed after the role changed: {reason}; "
                "the new Active needs an operator"
            )
            alert = AlertRaisedPayload(
                code=STUCK,
                severity=Severity.CRITICAL,
                message=why,
                subject=saga.id,  # each stuck saga its own alert
                details={"saga": saga.id, "step": spec.name, "node": spec.node},
            )
            await self._publish(saga, AlertRaised, alert, spec.epoch)
        else:
            undone = await self._compensate(saga, index)
            why = f"step {index} ({spec.name}) failed: {reason}; {undone}"
        ended = SagaEndedPayload(saga_id=saga.id, reason=why, needs_operator=stuck)
        await self._publish(saga, SagaFailed, ended, spec.epoch)
        log.error("saga %s %s: %s", saga.id, "needs an operator" if stuck else "failed", why)
        return why

    async def _compensate(self, saga: SagaRecord, failed_index: int) -> str:
        undone: list[str] = []
        for index in reversed(range(failed_index)):
            spec = saga.plan[index]
            if spec.compensation is None:
                continue
            self._require_leader(saga, f"the undo of step {index} ({spec.name})")
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
                    key = f"{saga.id}:{index}:undo"
                    reason = await self.steps.send(
                        saga, spec, spec.compensation, key, unless_gone=True
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
