"""What the orchestrator shows of its state: the REST API's response models (and the CLI's)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tandem.events.catalog.vocabulary import HealthStatus, Identity, ReplicaState, Role, SagaKind
from tandem.events.envelope import Event


class _View(BaseModel):
    model_config = ConfigDict(frozen=True)


class ServiceStatus(StrEnum):
    """What a client of the cluster sees (``service_status.cluster_service``)."""

    #: The Active serves: role active, alive, not fenced nor isolated, checks pass, exposed.
    SERVING = "serving"
    #: It serves, but protection is reduced (a Passive missing or behind, a check warning).
    DEGRADED = "degraded"
    #: Nobody serves.
    DOWN = "down"
    #: The last saga stopped for an operator, or a saga.stuck / fence.failed alert is open.
    NEEDS_OPERATOR = "needs_operator"


#: A target's replication as shown (the catalog's ReplicaState mapped: syncing ->
#: catching_up, paused or not heard from -> stopped).
ReplicationState = Literal["in_sync", "catching_up", "out_of_sync", "stopped"]


class NodeView(_View):
    name: str
    identity: Identity | None = None
    #: What the node reports it plays (None before it said).
    role: Role | None = None
    health: HealthStatus = HealthStatus.UNKNOWN
    checks: dict[str, HealthStatus] = Field(default_factory=dict)
    #: Heartbeats arriving (False: lost or never heard).
    alive: bool = False
    last_heartbeat_at: datetime | None = None
    #: Seconds since its last heartbeat arrived, when that is longer than a few of its
    #: intervals (late: maybe gone, not yet judged so); None when on time or not alive.
    heartbeat_late_s: float | None = None
    isolated: bool = False
    fenced: bool = False
    #: Why the node fenced itself, and since when (from its NodeSelfFenced or heartbeat).
    fenced_reason: str = ""
    fenced_since: datetime | None = None
    #: When the node guard hides the node unless its lease is renewed (None: not serving).
    guard_deadline: datetime | None = None
    #: As last reported by the node's replicator (None on the Active).
    replication: ReplicaState | None = None
    #: As a target: in_sync / catching_up / out_of_sync / stopped (None on the Active).
    replica_state: ReplicationState | None = None
    #: Batches and bytes this target has not applied yet (0 on the Active).
    lag_batches: int = 0
    lag_bytes: int = 0
    #: Seconds since its oldest change not yet applied was captured (0 on the Active; None:
    #: unknown, the target is not heard from or its replicator does not report it).
    lag_oldest_age_s: float | None = None
    #: Left stopped after an automatic switchover, for an operator to inspect.
    awaiting_operator: bool = False
    #: Kept from being chosen as the target of a switchover or failover (maintenance).
    standby: bool = False
    standby_reason: str = ""
    #: When it took on the role it plays (its NodeRoleAssumed; None: not known).
    role_since: datetime | None = None
    #: Seconds since its last heartbeat arrived here (None: never heard).
    heartbeat_age_s: float | None = None
    #: Seconds since its lease in tandem_leases was last seen renewed (None: never seen),
    #: and the role and epoch the lease says it holds.
    lease_age_s: float | None = None
    lease_role: str | None = None
    lease_epoch: int | None = None
    #: automatic / managed (``[failover] mode``, from its lease).
    failover_mode: str = "automatic"
    #: Where clients reach it while it is Active (its ``[public]`` identity, from its lease):
    #: ``10.0.0.50/32 on eth0``, ``db.example.com -> 192.0.2.10``, ``127.0.0.1:8080 (loopback)``.
    public_address: str | None = None


class PendingFailover(_View):
    failed_node: str
    to: str
    reason: str
    recommended_at: datetime


class AlertView(_View):
    """An alert raised on the cluster and not cleared (``GET /alerts`` has all of it)."""

    code: str
    message: str
    node: str
    raised_at: datetime
    fingerprint: str = ""
    subject: str = ""
    #: ``firing`` or ``acknowledged`` (it still fires).
    state: str = "firing"


class LastSagaView(_View):
    """The cluster's last saga, running or ended (e.g. one that failed or stopped)."""

    id: str
    kind: SagaKind
    state: str
    reason: str = ""
    started_at: datetime
    ended_at: datetime | None = None


class MaintenanceView(_View):
    """A paused cluster: no automatic failover or switchover (managed ones stay allowed)."""

    by: str
    reason: str
    since: datetime
    #: When the pause ends by itself (None: until ``tandem resume``).
    until: datetime | None = None


class RpoView(_View):
    """What the cluster would lose if its Active were lost now, against its target."""

    #: The cluster's RPO target (``[[clusters]] rpo_target_s``, else the orchestrator's).
    target_s: float
    #: Seconds of writes the best target has not applied (None: not known).
    now_s: float | None = None
    #: True within the target, False over it (or nothing replicated), None: not known.
    meeting: bool | None = None
    #: The target ``now_s`` is of.
    by: str | None = None
    why: str = ""


class ClusterView(_View):
    name: str
    active: str | None = None
    epoch: int = 0
    nodes: list[NodeView] = Field(default_factory=list)
    #: The saga running now on this cluster, if any.
    saga: str | None = None
    pending_failover: PendingFailover | None = None
    #: The Active's health (kept for compatibility: ``service`` says whether anyone serves).
    health: HealthStatus = HealthStatus.UNKNOWN
    service: ServiceStatus = ServiceStatus.DOWN
    service_reason: str = ""
    #: Set while the cluster is paused (``tandem pause``).
    maintenance: MaintenanceView | None = None
    #: Open alerts, oldest first, and the last saga (what failed, what an operator should see).
    alerts: list[AlertView] = Field(default_factory=list)
    last_saga: LastSagaView | None = None
    #: The recovery point now against the target (None only from an older orchestrator).
    rpo: RpoView | None = None


StepState = Literal["pending", "running", "completed", "failed", "compensated"]
#: needs_operator: stopped past its pivot (the role changed), nothing undone: the new Active
#: needs an operator (a saga.stuck or fence.failed alert says why).
SagaState = Literal["running", "completed", "failed", "needs_operator"]


class SagaStepView(_View):
    index: int
    name: str
    node: str
    command: str
    state: StepState = "pending"
    reason: str = ""
    started_at: datetime | None = None
    ended_at: datetime | None = None


class SagaView(_View):
    id: str
    kind: SagaKind
    cluster: str
    from_node: str | None
    to_node: str
    state: SagaState = "running"
    reason: str = ""
    started_at: datetime
    ended_at: datetime | None = None
    steps: list[SagaStepView] = Field(default_factory=list)


class GroupMemberView(_View):
    cluster: str
    priority: int
    depends_on: list[str] = Field(default_factory=list)
    active: str | None = None
    health: HealthStatus = HealthStatus.UNKNOWN
    service: ServiceStatus = ServiceStatus.DOWN
    service_reason: str = ""


class GroupView(_View):
    name: str
    members: list[GroupMemberView]
    #: The worst of its members.
    health: HealthStatus = HealthStatus.UNKNOWN
    #: The worst of its members' (or needs_operator when the group's own saga stopped).
    service: ServiceStatus = ServiceStatus.DOWN
    service_reason: str = ""
    saga: str | None = None


class EventView(_View):
    seq: int
    id: str
    type: str
    cluster: str
    node: str
    epoch: int
    occurred_at: datetime
    correlation_id: str | None = None
    #: The event this one answers (an acknowledgement: the alert's raise).
    causation_id: str | None = None
    payload: dict[str, object]


def event_view(seq: int, event: Event) -> EventView:
    """The API's view of ``event``, stored at stream sequence ``seq``."""
    return EventView(
        seq=seq,
        id=event.id,
        type=event.type,
        cluster=event.cluster,
        node=event.node,
        epoch=event.epoch,
        occurred_at=event.occurred_at,
        correlation_id=event.correlation_id,
        causation_id=event.causation_id,
        payload=event.payload.model_dump(mode="json"),
    )


class Accepted(_View):
    """A mutation's answer (202): the saga that now carries it out."""

    saga_id: str
    status_url: str


class GroupSwitchoverAccepted(Accepted):
    """A group switchover's answer; a directed one (``to``) also names the members already
    Active on a node of that identity, which the saga skips."""

    to: Identity | None = None
    #: Member cluster -> why it is skipped (only for a directed switchover).
    skipped: dict[str, str] | None = None


class PreviewStep(_View):
    index: int
    name: str
    node: str
    command: str
    #: The step that changes the role: before it a failure is undone, after it only forward.
    pivot: bool = False
    #: What undoes it when a later step before the pivot fails (None: nothing to undo).
    compensation: str | None = None


class ActionPreview(_View):
    """What a switchover or failover asked now would do, without doing it: the guard's verdict
    (``allowed``, or ``refusal`` says why not: the same words the request would get as its
    409), the target it would choose and the saga's steps."""

    kind: SagaKind
    cluster: str
    allowed: bool
    refusal: str = ""
    from_node: str | None = None
    to_node: str | None = None
    #: The epoch the cluster would have after the role change.
    epoch_after: int | None = None
    steps: list[PreviewStep] = Field(default_factory=list)


class LagPoint(_View):
    at: datetime
    lag_bytes: int
    #: Seconds since its oldest change not yet applied was captured (None: not known).
    lag_s: float | None = None


class LagHistoryView(_View):
    """Each target's replication lag, sampled every ``every_s`` by this orchestrator replica
    (kept in memory for ``keep_s``: a restarted replica starts again with none)."""

    cluster: str
    every_s: float
    keep_s: float
    targets: dict[str, list[LagPoint]] = Field(default_factory=dict)
