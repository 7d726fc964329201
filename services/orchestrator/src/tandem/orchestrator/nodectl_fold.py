"""The fold of an operator's node control (``NodeReinstated``, ``NodeCleanedUp``) into the
state projection (called by ``ClusterState.apply``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tandem.events.catalog import NodeCleanedUp, NodeReinstated
from tandem.events.envelope import Event

if TYPE_CHECKING:
    from tandem.orchestrator.state_records import ClusterRecord

#: The event types folded here.
NODE_CONTROL_EVENTS = (NodeReinstated, NodeCleanedUp)


def fold_node_control(c: ClusterRecord, event: Event) -> None:
    if isinstance(event, NodeReinstated):
        # Verified and synchronized as a Passive of the current Active: nothing left to do.
        c.node(event.payload.target).awaiting_operator = False
    elif isinstance(event, NodeCleanedUp):
        for name in event.payload.unfenced:
            n = c.node(name)
            n.fenced, n.fenced_reason, n.fenced_since = False, "", None
        for name in event.payload.released:
            c.node(name).awaiting_operator = False
