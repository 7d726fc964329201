"""Roles, liveness and fencing."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from tandem.events.catalog.vocabulary import Identity, Role
from tandem.events.envelope import Event, Payload
from tandem.events.names import NodeName
from tandem.events.registry import event_type


class RoleChangedPayload(Payload):
    active_node: NodeName
    previous_active: NodeName | None
    new_epoch: int = Field(ge=1)
    reason: str


@event_type
class RoleChanged(Event):
    """The compare-and-set in ``tandem_roles`` won: ``active_node`` is Active at ``new_epoch``."""

    type: Literal["RoleChanged"] = "RoleChanged"
    version: Literal[1] = 1
    payload: RoleChangedPayload


class NodeRoleAssumedPayload(Payload):
    identity: Identity
    role: Role
    reason: str


@event_type
class NodeRoleAssumed(Event):
    """A node reports the role it now really plays (after expose/hide took effect)."""

    type: Literal["NodeRoleAssumed"] = "NodeRoleAssumed"
    version: Literal[1] = 1
    payload: NodeRoleAssumedPayload


class HeartbeatLostPayload(Payload):
    peer: NodeName
    last_seen_at: datetime | None
    reason: str


@event_type
class HeartbeatLost(Event):
    type: Literal["HeartbeatLost"] = "HeartbeatLost"
    version: Literal[1] = 1
    payload: HeartbeatLostPayload


class HeartbeatRestoredPayload(Payload):
    peer: NodeName
    silent_for_s: float = Field(ge=0)
    reason: str


@event_type
class HeartbeatRestored(Event):
    type: Literal["HeartbeatRestored"] = "HeartbeatRestored"
    version: Literal[1] = 1
    payload: HeartbeatRestoredPayload


class NodeSelfFencedPayload(Payload):
    reason: str
    #: What the node did to hide itself, in order (e.g. ["stopped app db", "hid 10.0.0.5"]).
    actions: list[str]
    fenced_at: datetime
    #: Who hid the node: the agent itself, or its node guard (the agent was frozen or gone).
    by: Literal["agent", "guard"] = "agent"
    #: guard: how long after the deadline it hid the node.
    late_s: float | None = None


@event_type
class NodeSelfFenced(Event):
    """An Active that could not renew its lease hid itself; recorded once the bus is back."""

    type: Literal["NodeSelfFenced"] = "NodeSelfFenced"
    version: Literal[1] = 1
    payload: NodeSelfFencedPayload


class NodeUnfencedPayload(Payload):
    reason: str
    #: What the node did to serve again, in order.
    actions: list[str]


@event_type
class NodeUnfenced(Event):
    """A node that had fenced itself serves again: the role record still names it at the
    same epoch, no saga moved it, and it holds its lease again."""

    type: Literal["NodeUnfenced"] = "NodeUnfenced"
    version: Literal[1] = 1
    payload: NodeUnfencedPayload
