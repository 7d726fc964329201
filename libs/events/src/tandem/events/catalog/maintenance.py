"""Maintenance: an operator pauses a cluster's automatic decisions, or keeps a node from
being chosen as target (standby)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from tandem.events.envelope import Event, Payload
from tandem.events.names import NodeName
from tandem.events.registry import event_type


class ClusterPausedPayload(Payload):
    by: str
    reason: str
    #: When the pause ends by itself (None: until a resume).
    until: datetime | None = None


@event_type
class ClusterPaused(Event):
    """No automatic failover or switchover for this cluster (managed operations stay
    allowed): a lost Active gets a ``FailoverRecommended`` for an operator instead."""

    type: Literal["ClusterPaused"] = "ClusterPaused"
    version: Literal[1] = 1
    payload: ClusterPausedPayload


class ClusterResumedPayload(Payload):
    by: str
    reason: str


@event_type
class ClusterResumed(Event):
    """Automatic decisions apply again (an operator's resume, or the pause expired)."""

    type: Literal["ClusterResumed"] = "ClusterResumed"
    version: Literal[1] = 1
    payload: ClusterResumedPayload


class NodeStandbyChangedPayload(Payload):
    target: NodeName
    standby: bool
    by: str
    reason: str


@event_type
class NodeStandbyChanged(Event):
    """``target`` is (standby=True) or is no longer kept from being chosen as the target of
    a switchover or failover."""

    type: Literal["NodeStandbyChanged"] = "NodeStandbyChanged"
    version: Literal[1] = 1
    payload: NodeStandbyChangedPayload
