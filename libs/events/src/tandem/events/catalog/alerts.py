"""Alerts for operators: raised with a stable code, cleared by the same code."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from tandem.events.catalog.vocabulary import Severity
from tandem.events.envelope import Event, Payload
from tandem.events.registry import event_type


class AlertRaisedPayload(Payload):
    code: str = Field(min_length=1)
    severity: Severity
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


@event_type
class AlertRaised(Event):
    type: Literal["AlertRaised"] = "AlertRaised"
    version: Literal[1] = 1
    payload: AlertRaisedPayload


class AlertClearedPayload(Payload):
    code: str = Field(min_length=1)
    reason: str


@event_type
class AlertCleared(Event):
    type: Literal["AlertCleared"] = "AlertCleared"
    version: Literal[1] = 1
    payload: AlertClearedPayload
