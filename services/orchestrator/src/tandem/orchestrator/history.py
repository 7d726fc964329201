"""The history of switchovers and failovers (``GET /api/v1/sagas``, ``tandem history``):
each saga the state holds, summarised: when, from, to, why, who (an operator or the rule
that asked), how long, and how it ended."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict

from tandem.events.catalog.vocabulary import SagaKind
from tandem.orchestrator.state_records import SagaRecord

#: How a saga ended as history shows it: the saga's state, or ``cancelled`` for a saga an
#: operator cancelled before its pivot (its state is ``failed``: compensated).
Outcome = Literal["running", "completed", "failed", "needs_operator", "cancelled"]

#: ``core`` appends who asked to a saga's reason: ``<why> (by <actor>)``.
_BY = re.compile(r"^(?P<why>.*) \(by (?P<who>[^()]*(?:\([^()]*\))?)\)$", re.DOTALL)


class SagaSummary(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    kind: SagaKind
    cluster: str
    from_node: str | None
    to_node: str
    #: Why it was started (without the "(by ...)" the saga's reason carries).
    reason: str
    #: The operator (``<role>:<6 hex>``), the node whose rule asked (``primary (automatic)``),
    #: ``orchestrator`` for a failover its decisions started, or ``group G`` for a member.
    who: str
    automatic: bool
    started_at: datetime
    ended_at: datetime | None = None
    #: Seconds from its start to its end (None while it runs).
    duration_s: float | None = None
    outcome: Outcome
    #: How it ended (or why it stopped); '' while it runs.
    outcome_reason: str = ""
    #: The group saga it was a member of.
    parent: str | None = None
    #: Who resumed it last (``tandem saga resume``), and how often.
    resumed_by: str = ""
    resumes: int = 0


def started_by(saga: SagaRecord, why: str) -> tuple[str, str]:
    """The saga's reason split into (why, who)."""
    match = _BY.match(why)
    if match:
        return match["why"], match["who"]
    if saga.parent is not None:
        return why, "group saga " + saga.parent
    return why, "orchestrator" if saga.automatic else ""


def outcome(saga: SagaRecord) -> Outcome:
    if saga.state == "failed" and saga.cancel:
        return "cancelled"
    return saga.state  # type: ignore[return-value]  # one of SagaState


def summarize(saga: SagaRecord) -> SagaSummary:
    why, who = started_by(saga, saga.why)
    ended = saga.ended_at if saga.state != "running" else None
    return SagaSummary(
        id=saga.id,
        kind=saga.kind,
        cluster=saga.cluster,
        from_node=saga.from_node,
        to_node=saga.to_node,
        reason=why,
        who=who,
        automatic=saga.automatic,
        started_at=saga.started_at,
        ended_at=ended,
        duration_s=round((ended - saga.started_at).total_seconds(), 3) if ended else None,
        outcome=outcome(saga),
        outcome_reason=saga.reason if saga.state != "running" else "",
        parent=saga.parent,
        resumed_by=saga.resumed_by,
        resumes=saga.resumes,
    )


def select(
    sagas: list[SagaRecord], *, cluster: str | None, since: datetime | None, limit: int
) -> list[SagaRecord]:
    """Newest first: those of ``cluster`` (or all), started at or after ``since``, at most
    ``limit``."""
    chosen = [
        s
        for s in sagas
        if (cluster is None or s.cluster == cluster) and (since is None or s.started_at >= since)
    ]
    chosen.sort(key=lambda s: (s.started_at, s.id), reverse=True)
    return chosen[:limit]
