"""Requests and decisions that start role changes: operators, rules and the detector."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from tandem.events.envelope import Event, Payload
from tandem.events.names import NodeName
from tandem.events.registry import event_type


class SwitchoverRequestedPayload(Payload):
    to: NodeName | None
    requested_by: str
    reason: str
    #: True when a health rule asked for it: the old Active is then left AwaitingOperator.
    automatic: bool = False
    rule: str | None = None
    samples: list[dict[str, Any]] = Field(default_factory=list)


@event_type
class SwitchoverRequested(Event):
    type: Literal["SwitchoverRequested"] = "SwitchoverRequested"
    version: Literal[1] = 1
    payload: SwitchoverRequestedPayload


class FailoverRecommendedPayload(Payload):
    failed_node: NodeName
    to: NodeName
    reason: str


@event_type
class FailoverRecommended(Event):
    """Managed failover: the detector found the Active gone and waits for an operator."""

    type: Literal["FailoverRecommended"] = "FailoverRecommended"
    version: Literal[1] = 1
    payload: FailoverRecommendedPayload


class FailoverRecommendationWithdrawnPayload(Payload):
    failed_node: NodeName
    to: NodeName
    reason: str


@event_type
class FailoverRecommendationWithdrawn(Event):
    """A pending ``FailoverRecommended`` no longer holds: the Active came back, or the
    recommended target became unfit. Confirming it now is refused with this reason."""

    type: Literal["FailoverRecommendationWithdrawn"] = "FailoverRecommendationWithdrawn"
    version: Literal[1] = 1
    payload: FailoverRecommendationWithdrawnPayload


class FailoverRequestedPayload(Payload):
    to: NodeName | None
    requested_by: str
    reason: str


@event_type
class FailoverRequested(Event):
    type: Literal["FailoverRequested"] = "FailoverRequested"
    version: Literal[1] = 1
    payload: FailoverRequestedPayload


class OperatorActionRecordedPayload(Payload):
    actor: str
    action: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    outcome: str


@event_type
class OperatorActionRecorded(Event):
    """Audit trail of what an operator did through the API or the CLI."""

    type: Literal["OperatorActionRecorded"] = "OperatorActionRecorded"
    version: Literal[1] = 1
    payload: OperatorActionRecordedPayload
