"""Fencing a lost Active by powering its VM off: the failover saga asks, the VMware bridge
answers.

The request belongs to the cluster and to the node to fence (the node whose VM it is) and to
the saga (``correlation_id``); the answer (``VmFenced`` or ``VmFenceFailed``) names the
request as its cause. Powering off a VM that is already off is a success: the node is fenced.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tandem.events.envelope import Event, Payload
from tandem.events.registry import event_type


class VmFenceRequestedPayload(Payload):
    #: The VM (name, MoRef or instance UUID); None: the node's VM in the bridge's ``[vms]``
    #: map of the cluster.
    vm: str | None = None
    reason: str
    #: How long the requester waits for the answer; the bridge does not carry out a request
    #: older than this (nobody waits for it any more, and the node may serve again by then).
    timeout_s: float = Field(gt=0)


@event_type
class VmFenceRequested(Event):
    type: Literal["VmFenceRequested"] = "VmFenceRequested"
    version: Literal[1] = 1
    payload: VmFenceRequestedPayload


class VmFencedPayload(Payload):
    #: The VM as found in vCenter: its MoRef and name.
    vm: str
    vm_name: str
    #: The PowerOffVM_Task, or None when the VM was already off.
    task: str | None = None
    detail: str


@event_type
class VmFenced(Event):
    type: Literal["VmFenced"] = "VmFenced"
    version: Literal[1] = 1
    payload: VmFencedPayload


class VmFenceFailedPayload(Payload):
    #: The VM as asked for (or as found, when it was found).
    vm: str | None = None
    task: str | None = None
    reason: str


@event_type
class VmFenceFailed(Event):
    type: Literal["VmFenceFailed"] = "VmFenceFailed"
    version: Literal[1] = 1
    payload: VmFenceFailedPayload
