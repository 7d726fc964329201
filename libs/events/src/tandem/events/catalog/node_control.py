"""An operator's control of one node (issue 18 item 4 and 5): its applications stopped,
started or restarted on the Active (``ControlApplications``), its restart ladders reset
and a stale fence cleared (``CleanUpNode``), a node left behind brought back as a Passive
(``ReinstateReplica``), and the events that record it (``NodeReinstated``,
``NodeCleanedUp``). The commands are sent by the orchestrator (or the admin), answered by
the node's agent with ``CommandExecuted``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tandem.events.envelope import Command, Event, Payload
from tandem.events.names import NodeName
from tandem.events.registry import command_type, event_type

AppAction = Literal["stop", "start", "restart"]


class ControlApplicationsPayload(Payload):
    action: AppAction
    #: Applications to act on; empty means every protected application of the node.
    applications: list[str] = Field(default_factory=list)
    reason: str = ""
    timeout_s: float = Field(default=60.0, gt=0)


@command_type
class ControlApplications(Command):
    """Stop, start or restart applications of the Active. An operator's stop is not a
    failure: the node's health rules leave a stopped application alone until a start."""

    type: Literal["ControlApplications"] = "ControlApplications"
    version: Literal[1] = 1
    payload: ControlApplicationsPayload


class NodeControlPayload(Payload):
    reason: str = ""
    timeout_s: float = Field(default=30.0, gt=0)


class CleanUpNodePayload(NodeControlPayload):
    #: Clear the node's fenced state where it is stale: it fenced itself at an epoch the
    #: role record has left since (another node was made Active), so it is a hidden Passive
    #: that only still says "fenced". Never where it fenced at the current epoch.
    clear_stale_fence: bool = True


@command_type
class CleanUpNode(Command):
    """``tandem cleanup`` on one node: every health rule back to its first rung, and a stale
    fenced state cleared."""

    type: Literal["CleanUpNode"] = "CleanUpNode"
    version: Literal[1] = 1
    payload: CleanUpNodePayload


@command_type
class ReinstateReplica(Command):
    """A node whose replicator was held (the old Active of an automatic switchover) runs the
    side the role record gives it again: the target of the current Active."""

    type: Literal["ReinstateReplica"] = "ReinstateReplica"
    version: Literal[1] = 1
    payload: NodeControlPayload


class NodeReinstatedPayload(Payload):
    target: NodeName
    #: The Active that verified and synchronized it.
    source: NodeName
    by: str
    reason: str
    detail: str = ""


@event_type
class NodeReinstated(Event):
    """``target`` replicates again as a Passive, verified and synchronized by ``source``:
    it no longer awaits an operator."""

    type: Literal["NodeReinstated"] = "NodeReinstated"
    version: Literal[1] = 1
    payload: NodeReinstatedPayload


class NodeCleanedUpPayload(Payload):
    #: The node asked for (None: every node of the cluster).
    target: NodeName | None = None
    by: str
    reason: str
    #: Nodes whose stale fenced state was cleared (each no longer fenced by its own word).
    unfenced: list[NodeName] = Field(default_factory=list)
    #: Nodes that no longer await an operator.
    released: list[NodeName] = Field(default_factory=list)
    #: Operator alerts cleared (each also has its ``AlertCleared``).
    alerts: list[str] = Field(default_factory=list)
    #: Nodes whose restart ladders were reset.
    ladders_reset: list[NodeName] = Field(default_factory=list)


@event_type
class NodeCleanedUp(Event):
    """An operator cleared what needed an operator on a cluster (``tandem cleanup``)."""

    type: Literal["NodeCleanedUp"] = "NodeCleanedUp"
    version: Literal[1] = 1
    payload: NodeCleanedUpPayload
