"""What is told: one notification per notifiable event, channel-independent.

An ``AlertRaised`` is a ``firing`` alert, an ``AlertCleared`` its ``resolved`` form (same
fingerprint); a role change (``RoleChanged``, ``NodeSelfFenced``, ``NodeUnfenced``) is an
``event``: it has no end. Labels are Alertmanager's (``alertname`` is the alert's code;
a role change's is ``role.<EventType>``), and they are what silences match.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tandem.events.catalog import (
    AlertCleared,
    AlertRaised,
    NodeSelfFenced,
    NodeUnfenced,
    RoleChanged,
)
from tandem.events.catalog.alerts import alert_fingerprint
from tandem.events.catalog.notifications import NotificationStatus
from tandem.events.catalog.vocabulary import Severity
from tandem.events.envelope import Event
from tandem.notifier.config import Kind

ROLE_CHANGES = (RoleChanged, NodeSelfFenced, NodeUnfenced)
ROLE_SEVERITY = {
    "RoleChanged": Severity.WARNING,
    "NodeSelfFenced": Severity.CRITICAL,
    "NodeUnfenced": Severity.INFO,
}


@dataclass(frozen=True)
class Notification:
    event: Event
    #: The event's sequence in TANDEM_EVENTS.
    seq: int
    kind: Kind
    status: NotificationStatus
    code: str
    severity: Severity
    fingerprint: str
    subject: str
    #: One line: the alert's message, the clear's reason, what the role change did.
    summary: str
    #: When the alert started firing (the raise), or when the event happened.
    since: datetime
    details: dict[str, Any] = field(default_factory=dict)
    #: Role changes: active, previous, epoch, reason (TANDEM_ROLE_* for hooks).
    role: dict[str, str] = field(default_factory=dict)

    @property
    def cluster(self) -> str:
        return self.event.cluster

    @property
    def node(self) -> str:
        return self.event.node

    @property
    def ended(self) -> datetime | None:
        return self.event.occurred_at if self.status != "firing" else None

    def labels(self) -> dict[str, str]:
        labels = {
            "alertname": self.code,
            "code": self.code,
            "severity": self.severity.value,
            "cluster": self.cluster,
            "node": self.node,
        }
        if self.subject:
            labels["subject"] = self.subject
        return labels

    def silence_labels(self) -> dict[str, str]:
        """The labels silences match (``SILENCE_LABELS``)."""
        return {**self.labels(), "subject": self.subject}


def notification_of(
    event: Event, seq: int, *, since: datetime | None = None, message: str = ""
) -> Notification | None:
    """The notification of ``event``, or None when it is not notifiable. A clear carries the
    raise's start (``since``) and message when the notifier knows them."""
    if isinstance(event, AlertRaised):
        p = event.payload
        return Notification(
            event=event,
            seq=seq,
            kind="alert",
            status="firing",
            code=p.code,
            severity=p.severity,
            fingerprint=event.fingerprint,
            subject=p.subject,
            summary=p.message,
            since=since or event.occurred_at,
            details=dict(p.details),
        )
    if isinstance(event, AlertCleared):
        c = event.payload
        return Notification(
            event=event,
            seq=seq,
            kind="alert",
            status="resolved",
            code=c.code,
            severity=Severity.INFO,
            fingerprint=event.fingerprint,
            subject=c.subject,
            summary=f"{message + ': ' if message else ''}cleared: {c.reason}",
            since=since or event.occurred_at,
            details={"reason": c.reason},
        )
    if isinstance(event, ROLE_CHANGES):
        return _role_change(event, seq)
    return None


def _role_change(event: Event, seq: int) -> Notification:
    code = f"role.{event.type}"
    role: dict[str, str] = {"event": event.type, "epoch": str(event.epoch)}
    if isinstance(event, RoleChanged):
        p = event.payload
        previous = p.previous_active or "nobody"
        summary = f"{p.active_node} is Active (epoch {p.new_epoch}; was {previous}): {p.reason}"
        role.update(
            active=p.active_node,
            previous=p.previous_active or "",
            epoch=str(p.new_epoch),
            reason=p.reason,
        )
    elif isinstance(event, NodeSelfFenced):
        summary = f"{event.node} fenced itself ({event.payload.by}): {event.payload.reason}"
        role.update(reason=event.payload.reason, fenced_node=event.node)
    else:
        assert isinstance(event, NodeUnfenced)
        summary = f"{event.node} serves again: {event.payload.reason}"
        role.update(reason=event.payload.reason, unfenced_node=event.node)
    return Notification(
        event=event,
        seq=seq,
        kind="role_change",
        status="event",
        code=code,
        severity=ROLE_SEVERITY[event.type],
        fingerprint=alert_fingerprint(event.cluster, event.node, code, event.id),
        subject="",
        summary=summary,
        since=event.occurred_at,
        details=event.payload.model_dump(mode="json"),
        role=role,
    )
