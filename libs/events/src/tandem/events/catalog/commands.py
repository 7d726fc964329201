"""Commands the orchestrator sends to node agents: the steps of switchover and failover.

Switchover (on the Active, then the target): StopApplications, DrainSendQueue, Hide,
ApplyReceiveQueue, Expose, StartIntercepting, StartApplications. Failover is the last four on
the target. Every command is idempotent: carrying it out twice has the effect of once.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tandem.events.envelope import Command, Payload
from tandem.events.registry import command_type


class StepPayload(Payload):
    reason: str = ""
    #: How long the node may take before it answers with a failure.
    timeout_s: float = Field(default=30.0, gt=0)


class ApplicationsPayload(StepPayload):
    #: Applications to act on; empty means every protected application, in dependency order.
    applications: list[str] = Field(default_factory=list)


@command_type
class StopApplications(Command):
    type: Literal["StopApplications"] = "StopApplications"
    version: Literal[1] = 1
    payload: ApplicationsPayload


@command_type
class DrainSendQueue(Command):
    type: Literal["DrainSendQueue"] = "DrainSendQueue"
    version: Literal[1] = 1
    payload: StepPayload


@command_type
class Hide(Command):
    type: Literal["Hide"] = "Hide"
    version: Literal[1] = 1
    payload: StepPayload


@command_type
class ApplyReceiveQueue(Command):
    type: Literal["ApplyReceiveQueue"] = "ApplyReceiveQueue"
    version: Literal[1] = 1
    payload: StepPayload


@command_type
class Expose(Command):
    type: Literal["Expose"] = "Expose"
    version: Literal[1] = 1
    payload: StepPayload


@command_type
class StartIntercepting(Command):
    type: Literal["StartIntercepting"] = "StartIntercepting"
    version: Literal[1] = 1
    payload: StepPayload


@command_type
class StopIntercepting(Command):
    """The Active stops capturing (its send queue drained first); the node then replicates
    nothing until it is made Active again or the role record gives it another role."""

    type: Literal["StopIntercepting"] = "StopIntercepting"
    version: Literal[1] = 1
    payload: StepPayload


@command_type
class StartApplications(Command):
    type: Literal["StartApplications"] = "StartApplications"
    version: Literal[1] = 1
    payload: ApplicationsPayload


class PingPayload(Payload):
    note: str = ""


@command_type
class Ping(Command):
    """Asks a node to answer; used by operators and tests to check the command path."""

    type: Literal["Ping"] = "Ping"
    version: Literal[1] = 1
    payload: PingPayload


class VerifyReplicaPayload(Payload):
    #: The Passive to verify; None: every Passive of the cluster.
    target: str | None = None
    reason: str = "requested by an operator"
    max_passes: int = Field(default=3, ge=1, le=10)


@command_type
class VerifyReplica(Command):
    """Asks the Active's replicator to verify & synchronize its replicas (answered at the end)."""

    type: Literal["VerifyReplica"] = "VerifyReplica"
    version: Literal[1] = 1
    payload: VerifyReplicaPayload
