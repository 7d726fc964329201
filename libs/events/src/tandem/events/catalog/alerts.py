"""Alerts for operators: raised with a stable code, acknowledged, cleared by the same code.

An alert is known by its fingerprint: code + cluster + node + subject (the thing it is about
inside the node: a target, an application, a DNS name; "" when the node is the subject). The
same condition raised twice is one alert; its ``AlertCleared`` carries the same four parts.
Silences mute notifications of the alerts their matchers select until they end; they do not
change what is firing.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

from pydantic import AwareDatetime, Field

from tandem.events.catalog.vocabulary import Severity
from tandem.events.envelope import Event, Payload
from tandem.events.registry import event_type

#: The labels a silence may match on (equality; "*" as a value matches anything).
SILENCE_LABELS = ("code", "cluster", "node", "subject", "severity")


def alert_fingerprint(cluster: str, node: str, code: str, subject: str = "") -> str:
    """A stable id of one alert: the same condition on the same thing, whenever raised."""
    text = "\x1f".join((code, cluster, node, subject))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class AlertRaisedPayload(Payload):
    code: str = Field(min_length=1)
    severity: Severity
    message: str
    details: dict[str, Any] = Field(default_factory=dict)
    #: What inside the node the alert is about ("" for the node itself).
    subject: str = ""


@event_type
class AlertRaised(Event):
    type: Literal["AlertRaised"] = "AlertRaised"
    version: Literal[1] = 1
    payload: AlertRaisedPayload

    @property
    def fingerprint(self) -> str:
        return alert_fingerprint(self.cluster, self.node, self.payload.code, self.payload.subject)


class AlertClearedPayload(Payload):
    code: str = Field(min_length=1)
    reason: str
    subject: str = ""


@event_type
class AlertCleared(Event):
    type: Literal["AlertCleared"] = "AlertCleared"
    version: Literal[1] = 1
    payload: AlertClearedPayload

    @property
    def fingerprint(self) -> str:
        return alert_fingerprint(self.cluster, self.node, self.payload.code, self.payload.subject)


class AlertAcknowledgedPayload(Payload):
    fingerprint: str = Field(min_length=1, max_length=64)
    #: Who acknowledged it (the operator's bus or API identity).
    by: str = Field(min_length=1)
    comment: str = ""


@event_type
class AlertAcknowledged(Event):
    """An operator has seen a firing alert: notifications of it stop repeating; it still
    fires until its condition ends."""

    type: Literal["AlertAcknowledged"] = "AlertAcknowledged"
    version: Literal[1] = 1
    payload: AlertAcknowledgedPayload


class SilenceCreatedPayload(Payload):
    silence_id: str = Field(min_length=1, max_length=64)
    #: Label → value, all of which an alert must match (labels: SILENCE_LABELS).
    matchers: dict[str, str] = Field(min_length=1)
    starts_at: AwareDatetime
    ends_at: AwareDatetime
    by: str = Field(min_length=1)
    comment: str = ""


@event_type
class SilenceCreated(Event):
    type: Literal["SilenceCreated"] = "SilenceCreated"
    version: Literal[1] = 1
    payload: SilenceCreatedPayload


class SilenceRemovedPayload(Payload):
    silence_id: str = Field(min_length=1, max_length=64)
    by: str = Field(min_length=1)


@event_type
class SilenceRemoved(Event):
    """A silence ended before its time."""

    type: Literal["SilenceRemoved"] = "SilenceRemoved"
    version: Literal[1] = 1
    payload: SilenceRemovedPayload


def silence_matches(matchers: dict[str, str], labels: dict[str, str]) -> bool:
    """True when every matcher's label has the matcher's value ("*": any value)."""
    return all(want == "*" or labels.get(name) == want for name, want in matchers.items())
