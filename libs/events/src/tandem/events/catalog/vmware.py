"""VMware remediation requests and their outcome."""

from __future__ import annotations

from typing import Literal

from tandem.events.catalog.vocabulary import VmAction
from tandem.events.envelope import Event, Payload
from tandem.events.registry import event_type


class VmRemediationRequestedPayload(Payload):
    vm: str
    action: VmAction
    reason: str
    target_host: str | None = None
    target_datastore: str | None = None
    restart_application: str | None = None


@event_type
class VmRemediationRequested(Event):
    type: Literal["VmRemediationRequested"] = "VmRemediationRequested"
    version: Literal[1] = 1
    payload: VmRemediationRequestedPayload


class VmRemediationProgressPayload(Payload):
    vm: str
    action: VmAction
    task: str | None
    detail: str


@event_type
class VmRemediationStarted(Event):
    type: Literal["VmRemediationStarted"] = "VmRemediationStarted"
    version: Literal[1] = 1
    payload: VmRemediationProgressPayload


@event_type
class VmRemediationCompleted(Event):
    type: Literal["VmRemediationCompleted"] = "VmRemediationCompleted"
    version: Literal[1] = 1
    payload: VmRemediationProgressPayload


@event_type
class VmRemediationFailed(Event):
    type: Literal["VmRemediationFailed"] = "VmRemediationFailed"
    version: Literal[1] = 1
    payload: VmRemediationProgressPayload
