"""An operator steers a saga: cancels it before its pivot (its done steps are undone), or
resumes one that stopped for an operator (``needs_operator``) from the step it reached."""

from __future__ import annotations

from typing import Literal

from tandem.events.envelope import Event, Payload
from tandem.events.registry import event_type


class SagaControlPayload(Payload):
    saga_id: str
    #: Who asked (the API's caller, ``<role>:<6 hex>``).
    by: str
    reason: str


@event_type
class SagaCancelRequested(Event):
    """The saga stops before its next step and undoes what it did (only before its pivot,
    the role change: after it, a saga only goes forward). It ends ``SagaFailed``."""

    type: Literal["SagaCancelRequested"] = "SagaCancelRequested"
    version: Literal[1] = 1
    payload: SagaControlPayload


@event_type
class SagaResumeRequested(Event):
    """A saga that stopped for an operator runs again, forward, from the step it reached
    (its failed step is tried again); it ends again ``SagaCompleted`` or ``SagaFailed``."""

    type: Literal["SagaResumeRequested"] = "SagaResumeRequested"
    version: Literal[1] = 1
    payload: SagaControlPayload
