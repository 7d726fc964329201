"""Switchover and failover sagas: every start, step and end is an event."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from tandem.events.catalog.vocabulary import SagaKind
from tandem.events.envelope import Event, Payload
from tandem.events.names import NodeName
from tandem.events.registry import event_type


class SagaStepSpec(Payload):
    """One step of a saga as data: where it runs, what it sends, how long it may take, and
    what undoes it. The ``pivot`` step (the role change) has no undo: after it the saga only
    goes forward."""

    name: str
    #: The node the command goes to; the orchestrator itself for ``ChangeRole``.
    node: str
    command: str
    timeout_s: float = Field(gt=0)
    epoch: int = Field(ge=0)
    compensation: str | None = None
    pivot: bool = False


class SagaStartedPayload(Payload):
    saga_id: str
    kind: SagaKind
    from_node: NodeName | None
    to_node: NodeName
    steps: list[str] = Field(min_length=1)
    reason: str
    #: The steps as data (resumed from here by a new leader after a crash).
    plan: list[SagaStepSpec] = Field(default_factory=list)
    #: Started without an operator: a switchover a health rule or the network checks asked
    #: for, or a failover the orchestrator's decisions started for a gone Active.
    automatic: bool = False
    #: For a member of a group saga: the group saga it belongs to.
    parent: str | None = None


@event_type
class SagaStarted(Event):
    type: Literal["SagaStarted"] = "SagaStarted"
    version: Literal[1] = 1
    payload: SagaStartedPayload


class SagaStepPayload(Payload):
    saga_id: str
    index: int = Field(ge=0)
    step: str
    target_node: NodeName
    command: str


@event_type
class SagaStepStarted(Event):
    type: Literal["SagaStepStarted"] = "SagaStepStarted"
    version: Literal[1] = 1
    payload: SagaStepPayload


class SagaStepCompletedPayload(SagaStepPayload):
    result: dict[str, Any] = Field(default_factory=dict)


@event_type
class SagaStepCompleted(Event):
    type: Literal["SagaStepCompleted"] = "SagaStepCompleted"
    version: Literal[1] = 1
    payload: SagaStepCompletedPayload


class SagaStepFailedPayload(SagaStepPayload):
    reason: str
    compensating: bool


@event_type
class SagaStepFailed(Event):
    type: Literal["SagaStepFailed"] = "SagaStepFailed"
    version: Literal[1] = 1
    payload: SagaStepFailedPayload


class SagaEndedPayload(Payload):
    saga_id: str
    reason: str
    #: On ``SagaFailed``: the saga stopped after its pivot (the role changed) and could not
    #: go forward; nothing was undone: the new Active needs an operator (an alert says so).
    needs_operator: bool = False


@event_type
class SagaCompleted(Event):
    type: Literal["SagaCompleted"] = "SagaCompleted"
    version: Literal[1] = 1
    payload: SagaEndedPayload


@event_type
class SagaFailed(Event):
    """The saga stopped; its compensations (if any) have run. ``reason`` says why;
    ``needs_operator``: it stopped past its pivot, for an operator."""

    type: Literal["SagaFailed"] = "SagaFailed"
    version: Literal[1] = 1
    payload: SagaEndedPayload
