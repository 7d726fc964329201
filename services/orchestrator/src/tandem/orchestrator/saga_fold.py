"""The fold of an operator's cancel or resume of a saga (``state.ClusterState`` calls it),
so that every replica agrees on what the leader does with it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tandem.events.catalog.saga_control import SagaCancelRequested, SagaResumeRequested

if TYPE_CHECKING:
    from tandem.orchestrator.state_records import SagaRecord


def fold_saga_control(
    saga: SagaRecord | None, event: SagaCancelRequested | SagaResumeRequested
) -> None:
    """A cancel marks a running saga (its runner undoes it and ends it ``SagaFailed``); a
    resume makes a saga stopped for an operator run again. Folding either again (the leader
    folds its own at once, the stream delivers it later) changes nothing."""
    if saga is None:
        return
    p = event.payload
    if isinstance(event, SagaCancelRequested):
        if saga.state == "running" and not saga.cancel:
            saga.cancel = f"cancelled by {p.by}: {p.reason}"
        return
    if saga.state != "needs_operator":
        return
    if saga.resumed_at is not None and event.occurred_at <= saga.resumed_at:
        return  # this resume was folded already (the saga stopped again since)
    saga.state, saga.reason, saga.ended_at = "running", "", None
    saga.resumes += 1
    saga.resumed_at, saga.resumed_by = event.occurred_at, p.by
