"""DNS reconcile: the dns_updater checks that each DR name points at its cluster's current
Active (at its start, periodically and on request) and moves it when it does not."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tandem.events.envelope import Event, Payload
from tandem.events.names import ClusterName
from tandem.events.registry import event_type

#: What started a check: the dns_updater's start, its periodic check, an operator's request.
ReconcileTrigger = Literal["start", "periodic", "request"]
#: A name's outcome: it pointed at the Active already, it was moved there, it could not be.
ReconcileOutcome = Literal["ok", "fixed", "failed"]


class DnsReconcileRequestedPayload(Payload):
    #: The cluster whose DR names to check (None: every cluster's).
    cluster: ClusterName | None = None
    requested_by: str
    reason: str


@event_type
class DnsReconcileRequested(Event):
    """An operator asks the dns_updater to check its DR names now (``tandem dns
    reconcile``). Published by the orchestrator on the cluster asked for (on ``tandem`` for
    every cluster); the dns_updater answers with one ``DnsReconcileCompleted``."""

    type: Literal["DnsReconcileRequested"] = "DnsReconcileRequested"
    version: Literal[1] = 1
    payload: DnsReconcileRequestedPayload


class DnsRecordReconciledPayload(Payload):
    name: str
    #: The Active the name points at now, and its addresses.
    active_node: str
    addresses: list[str] = Field(min_length=1)
    #: What the authoritative servers answered before (each server and its addresses).
    found: list[str]
    trigger: ReconcileTrigger
    attempts: int = Field(ge=1)


@event_type
class DnsRecordReconciled(Event):
    """A DR name that did not point at the Active was moved there (published only then: a
    check that finds the name right records nothing)."""

    type: Literal["DnsRecordReconciled"] = "DnsRecordReconciled"
    version: Literal[1] = 1
    payload: DnsRecordReconciledPayload


class ReconciledName(Payload):
    cluster: ClusterName
    name: str
    outcome: ReconcileOutcome
    active_node: str | None = None
    addresses: list[str] = Field(default_factory=list)
    reason: str = ""


class DnsReconcileCompletedPayload(Payload):
    #: The request answered (its id is also this event's correlation id).
    request_id: str
    cluster: ClusterName | None = None
    names: list[ReconciledName] = Field(default_factory=list)


@event_type
class DnsReconcileCompleted(Event):
    """The dns_updater's answer to a ``DnsReconcileRequested``: every DR name it checked and
    what came of it (none: it has no DR name for that cluster)."""

    type: Literal["DnsReconcileCompleted"] = "DnsReconcileCompleted"
    version: Literal[1] = 1
    payload: DnsReconcileCompletedPayload
