"""Previews of a switchover or failover (the console shows one before it asks to confirm):
the same checks and plan as the request itself, nothing started, nothing published."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tandem.events.catalog.sagas import SagaStepSpec
from tandem.events.catalog.vocabulary import SagaKind
from tandem.orchestrator.facade import ConflictError, NotFoundError
from tandem.orchestrator.state import ClusterState
from tandem.orchestrator.state_records import ClusterRecord
from tandem.orchestrator.views import ActionPreview, PreviewStep

Planned = tuple[ClusterRecord, str, list[SagaStepSpec]]


class ActionPreviews:
    """A mixin of ``Orchestrator``: it reads the attributes and planners set there."""

    state: ClusterState

    if TYPE_CHECKING:

        def _require_leader(self) -> None: ...

        def _known(self, cluster: str) -> bool: ...

        def plan_switchover(
            self, cluster: str, to: str | None, *, automatic: bool = False
        ) -> Planned: ...

        def plan_failover(self, cluster: str, to: str | None, *, operator: bool) -> Planned: ...

    def switchover_preview(self, cluster: str, to: str | None) -> ActionPreview:
        return self._preview(SagaKind.SWITCHOVER, cluster, to)

    def failover_preview(self, cluster: str, to: str | None) -> ActionPreview:
        return self._preview(SagaKind.FAILOVER, cluster, to)

    def _preview(self, kind: SagaKind, cluster: str, to: str | None) -> ActionPreview:
        if not self._known(cluster):
            raise NotFoundError(f"no cluster {cluster!r}")
        rec = self.state.cluster(cluster)
        try:
            self._require_leader()
            if kind is SagaKind.SWITCHOVER:
                rec, target, plan = self.plan_switchover(cluster, to)
            else:
                rec, target, plan = self.plan_failover(cluster, to, operator=True)
        except ConflictError as exc:
            return ActionPreview(
                kind=kind,
                cluster=cluster,
                allowed=False,
                refusal=str(exc),
                from_node=rec.active,
                to_node=to,
            )
        return ActionPreview(
            kind=kind,
            cluster=cluster,
            allowed=True,
            from_node=rec.active,
            to_node=target,
            epoch_after=rec.epoch + 1,
            steps=[
                PreviewStep(
                    index=i,
                    name=step.name,
                    node=step.node,
                    command=step.command,
                    pivot=step.pivot,
                    compensation=step.compensation,
                )
                for i, step in enumerate(plan)
            ],
        )
