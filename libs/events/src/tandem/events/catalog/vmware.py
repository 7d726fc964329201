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
    #: Where the VM goes: the host (vMotion) or datastore (Storage vMotion), by name.
    target: str | None = None


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


class ApplicationRestartRequestedPayload(Payload):
    application: str
    reason: str
    #: Who asks (for example ``vmware_bridge``).
    requested_by: str


@event_type
class ApplicationRestartRequested(Event):
    """Asks node ``node`` of ``cluster`` to restart one application (the VMware bridge does
    after a remediation whose request named ``restart_application``)."""

    type: Literal["ApplicationRestartRequested"] = "ApplicationRestartRequested"
    version: Literal[1] = 1
    payload: ApplicationRestartRequestedPayload
