"""An operator's hold on sagas: their history (``GET /api/v1/sagas``), cancelling one before
its pivot (``POST /api/v1/sagas/{id}/cancel``: what it did is undone) and resuming one that
stopped for an operator (``.../resume``: forward, from the step it reached). A mixin of
``Orchestrator``; the runner (``runner.py``) does the work, the fold is ``saga_fold.py``."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import quote

from tandem.events.catalog.saga_control import (
    SagaCancelRequested,
    SagaControlPayload,
    SagaResumeRequested,
)
from tandem.orchestrator.facade import ConflictError, NotFoundError
from tandem.orchestrator.history import SagaSummary, select, summarize
from tandem.orchestrator.plans import CHANGE_ROLE
from tandem.orchestrator.publishing import Publisher, lost_is_conflict
from tandem.orchestrator.settings import OrchestratorFile, OrchestratorSettings
from tandem.orchestrator.state import ClusterState
from tandem.orchestrator.state_records import SagaRecord
from tandem.orchestrator.views import Accepted

if TYPE_CHECKING:
    from tandem.orchestrator.runner import SagaRunner

log = logging.getLogger(__name__)


class SagaControlAccepted(Accepted):
    """A cancel or resume stored: the saga carries it out (follow ``status_url``)."""

    message: str


def cancel_refusal(saga: SagaRecord, reached: int | None) -> str:
    """Why ``saga`` cannot be cancelled now ('' when it can): only a running saga of one
    cluster, before its role change (``reached``: the step its runner is at here)."""
    if saga.state != "running":
        return f"saga {saga.id} is {saga.state}: nothing to cancel ({saga.reason})"
    if saga.cancel:
        return f"saga {saga.id} is already being cancelled ({saga.cancel})"
    if saga.parent is not None:
        return f"saga {saga.id} is a member of group saga {saga.parent}: it is not cancelled alone"
    pivot = next((i for i, s in enumerate(saga.plan) if s.command == CHANGE_ROLE), None)
    if pivot is None:
        return f"a {saga.kind} saga has no role change to stop before: it cannot be cancelled"
    spec = saga.plan[pivot]
    steps = [i for i, st in saga.steps.items() if not st.name.startswith("undo ")]
    if (reached is not None and reached >= pivot) or any(i >= pivot for i in steps):
        done = saga.steps.get(pivot)
        how = "changed" if done is not None and done.state == "completed" else "is changing"
        return (
            f"saga {saga.id} is past its pivot: step {pivot} ({spec.name}) {how} the role "
            f"({spec.node} Active at epoch {spec.epoch}); after the role change a saga only "
            "goes forward (if it stops, resume it)"
        )
    return ""


def _reached(saga: SagaRecord) -> tuple[int, str]:
    """The first step not completed: where a resumed saga goes on."""
    done = saga.completed_steps()
    index = next((i for i in range(len(saga.plan)) if i not in done), len(saga.plan) - 1)
    return index, saga.plan[index].name


class SagaControl:
    """History, cancel and resume (a mixin: it reads what ``Orchestrator`` sets)."""

    s: OrchestratorSettings
    file: OrchestratorFile
    state: ClusterState
    publisher: Publisher
    runner: SagaRunner
    _starting: asyncio.Lock

    if TYPE_CHECKING:  # provided by Orchestrator and OrchestratorViews

        def _known(self, cluster: str) -> bool: ...
        def _require_leader(self) -> None: ...
        def is_leader(self) -> bool: ...

    def saga_history(
        self, cluster: str | None, since: datetime | None, limit: int
    ) -> list[SagaSummary]:
        groups = {g.name for g in self.file.groups}
        if cluster is not None and not (self._known(cluster) or cluster in groups):
            raise NotFoundError(f"no cluster {cluster!r}")
        chosen = select(list(self.state.sagas.values()), cluster=cluster, since=since, limit=limit)
        return [summarize(s) for s in chosen]

    def _saga_record(self, saga_id: str) -> SagaRecord:
        saga = self.state.sagas.get(saga_id)
        if saga is None:
            raise NotFoundError(f"no saga {saga_id!r}")
        return saga

    def _control_event(
        self, kind: type[SagaCancelRequested | SagaResumeRequested], saga: SagaRecord, by: str,
        reason: str,
    ) -> SagaCancelRequested | SagaResumeRequested:  # fmt: skip
        return kind(
            cluster=saga.cluster,
            node=self.s.instance,
            epoch=self.state.cluster(saga.cluster).epoch,
            correlation_id=saga.id,
            payload=SagaControlPayload(saga_id=saga.id, by=by, reason=reason),
        )

    async def cancel_saga(self, saga_id: str, actor: str, reason: str) -> SagaControlAccepted:
        async with lost_is_conflict():
            self._require_leader()
            saga = self._saga_record(saga_id)
            why = cancel_refusal(saga, self.runner.at.get(saga.id))
            if why:
                raise ConflictError(why)
            event = self._control_event(SagaCancelRequested, saga, actor, reason)
            # Folded first: from now on the runner, at its next step, undoes instead of going
            # on (it cannot pass the pivot while the event is being stored).
            self.state.apply(event)
            try:
                await self.publisher.stored(
                    event, keep_going=self.is_leader, what=f"saga {saga.id}: cancel"
                )
            except BaseException:
                saga.cancel = ""  # not stored: the next leader never heard of it
                raise
            running = saga.steps.get(self.runner.at.get(saga.id, -1))
            if saga.id not in self.runner.running:  # a saga nobody ran here: undone now
                self.runner.start(saga)  # (one this leader runs or ran sees the cancel itself)
            log.warning("saga %s: %s", saga.id, saga.cancel)
            after = (
                f" once its step {running.index} ({running.name}) ends"
                if running is not None and running.state == "running"
                else ""
            )
            return SagaControlAccepted(
                saga_id=saga.id,
                status_url=f"/api/v1/sagas/{quote(saga.id, safe='')}",
                message=f"saga {saga.id} is cancelled{after}: what it did is undone",
            )

    async def resume_saga(self, saga_id: str, actor: str, reason: str) -> SagaControlAccepted:
        async with self._starting, lost_is_conflict():
            self._require_leader()
            saga = self._saga_record(saga_id)
            if saga.state != "needs_operator":
                raise ConflictError(
                    f"saga {saga.id} is {saga.state}: only a saga stopped for an operator "
                    "(needs_operator) is resumed"
                )
            if saga.parent is not None:
                raise ConflictError(f"saga {saga.id} is a member of group saga {saga.parent}")
            running = self.state.running_saga(saga.cluster)
            if running is not None:
                raise ConflictError(
                    f"a {running.kind} saga ({running.id}) already runs on {saga.cluster}"
                )
            last = self.state.last_saga(saga.cluster)
            if last is not None and last.id != saga.id:
                raise ConflictError(
                    f"a later {last.kind} saga ({last.id}, {last.state}) ran on {saga.cluster} "
                    f"since: only the cluster's last saga is resumed"
                )
            event = self._control_event(SagaResumeRequested, saga, actor, reason)
            await self.publisher.stored(
                event, keep_going=self.is_leader, what=f"saga {saga.id}: resume"
            )
            self.state.apply(event)
            index, name = _reached(saga)
            self.runner.start(saga)
            log.warning("saga %s resumed by %s from step %s (%s): %s", saga.id, actor, index,
                        name, reason)  # fmt: skip
            return SagaControlAccepted(
                saga_id=saga.id,
                status_url=f"/api/v1/sagas/{quote(saga.id, safe='')}",
                message=f"saga {saga.id} resumed from step {index} ({name})",
            )
