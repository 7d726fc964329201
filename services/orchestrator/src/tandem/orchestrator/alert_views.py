"""What the REST API (and ``tandem alerts``) shows of alerts and silences: the response
models, built from the fold's records (``state_records.AlertRecord``, ``SilenceRecord``)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tandem.events.catalog.alerts import silence_matches
from tandem.orchestrator.state_records import AlertRecord, AlertState, SilenceRecord

SilenceState = Literal["active", "pending", "expired", "removed"]


class _View(BaseModel):
    model_config = ConfigDict(frozen=True)


class AlertDetail(_View):
    """One alert, known by its fingerprint (code + cluster + node + subject)."""

    fingerprint: str
    cluster: str
    node: str
    code: str
    subject: str = ""
    severity: str
    message: str
    details: dict[str, Any] = Field(default_factory=dict)
    #: ``firing``, ``acknowledged`` (an operator saw it; it still fires) or ``cleared``.
    state: AlertState
    raised_at: datetime
    last_raised_at: datetime
    #: How often it was raised in this episode (since it last cleared).
    count: int
    #: The event that raised it, and the event that caused that one (its cause link).
    event_id: str
    causation_id: str | None = None
    acknowledged_by: str = ""
    acknowledged_at: datetime | None = None
    ack_comment: str = ""
    cleared_at: datetime | None = None
    cleared_reason: str = ""
    #: The silences in force that mute its notifications (it fires all the same).
    silenced_by: list[str] = Field(default_factory=list)


class SilenceView(_View):
    id: str
    #: Label -> value, every one of which an alert must have ("*": any value).
    matchers: dict[str, str]
    starts_at: datetime
    ends_at: datetime
    by: str
    comment: str = ""
    created_at: datetime
    state: SilenceState
    removed_at: datetime | None = None
    removed_by: str = ""
    #: The open alerts it mutes now.
    muting: list[str] = Field(default_factory=list)


def alert_detail(
    alert: AlertRecord, silences: Iterable[SilenceRecord], now: datetime
) -> AlertDetail:
    return AlertDetail(
        fingerprint=alert.fingerprint,
        cluster=alert.cluster,
        node=alert.node,
        code=alert.code,
        subject=alert.subject,
        severity=alert.severity,
        message=alert.message,
        details=alert.details,
        state=alert.state,
        raised_at=alert.raised_at,
        last_raised_at=alert.last_raised_at or alert.raised_at,
        count=alert.count,
        event_id=alert.event_id,
        causation_id=alert.causation_id,
        acknowledged_by=alert.acknowledged_by,
        acknowledged_at=alert.acknowledged_at,
        ack_comment=alert.ack_comment,
        cleared_at=alert.cleared_at,
        cleared_reason=alert.cleared_reason,
        silenced_by=[
            s.silence_id
            for s in silences
            if alert.state != "cleared"
            and s.active(now)
            and silence_matches(s.matchers, alert.labels)
        ],
    )


def silence_state(silence: SilenceRecord, now: datetime) -> SilenceState:
    if silence.removed_at is not None:
        return "removed"
    if silence.ends_at <= now:
        return "expired"
    return "active" if silence.starts_at <= now else "pending"


def silence_view(
    silence: SilenceRecord, open_alerts: Iterable[AlertRecord], now: datetime
) -> SilenceView:
    active = silence.active(now)
    return SilenceView(
        id=silence.silence_id,
        matchers=silence.matchers,
        starts_at=silence.starts_at,
        ends_at=silence.ends_at,
        by=silence.by,
        comment=silence.comment,
        created_at=silence.created_at,
        state=silence_state(silence, now),
        removed_at=silence.removed_at,
        removed_by=silence.removed_by,
        muting=[
            a.fingerprint
            for a in open_alerts
            if active and silence_matches(silence.matchers, a.labels)
        ],
    )
