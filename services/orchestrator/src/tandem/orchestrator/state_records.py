"""What the orchestrator's state (``state.py``) folds ``TANDEM_EVENTS`` into: a cluster's
record (Active, epoch, its nodes, pending failover, open alerts, maintenance), a node's, a
saga's with its steps, an alert's, a silence's, and an automatic switchover request's; plain
dataclasses, changed only by ``ClusterState.apply`` and the folds it calls.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from tandem.events.catalog.sagas import SagaStepSpec
from tandem.events.catalog.vocabulary import HealthStatus, Identity, ReplicaState, Role
from tandem.orchestrator.views import MaintenanceView, PendingFailover, SagaStepView, SagaView

ORDER = [HealthStatus.OK, HealthStatus.UNKNOWN, HealthStatus.WARNING, HealthStatus.CRITICAL]


def worst(statuses: list[HealthStatus]) -> HealthStatus:
    return max(statuses, key=ORDER.index, default=HealthStatus.UNKNOWN)


@dataclass
class NodeRecord:
    name: str
    identity: Identity | None = None
    role: Role | None = None
    checks: dict[str, HealthStatus] = field(default_factory=dict)
    isolated: bool = False
    fenced: bool = False
    fenced_reason: str = ""
    fenced_since: datetime | None = None
    #: When its agent last started (a fence from before belongs to an earlier run).
    agent_started_at: datetime | None = None
    replication: ReplicaState | None = None
    lag_batches: int = 0
    lag_bytes: int = 0
    awaiting_operator: bool = False
    #: When it took on its current role (its NodeRoleAssumed).
    role_since: datetime | None = None
    #: Why this node's replica is not known to match its source ('' when it is): the source
    #: restarted without a clean stop, and no verify of this node succeeded since.
    unverified: str = ""
    #: Never chosen as a target while set (``tandem node standby``), and why.
    standby: bool = False
    standby_reason: str = ""
    #: When the standby last changed (an older change folded again late is ignored).
    standby_at: datetime | None = None

    @property
    def health(self) -> HealthStatus:
        return worst(list(self.checks.values()))


@dataclass
class SagaRecord:
    id: str
    kind: str
    cluster: str
    from_node: str | None
    to_node: str
    plan: list[SagaStepSpec]
    started_at: datetime
    automatic: bool = False
    parent: str | None = None
    cause: str | None = None
    state: str = "running"
    reason: str = ""
    ended_at: datetime | None = None
    steps: dict[int, SagaStepView] = field(default_factory=dict)
    #: Why it was started (``reason`` becomes how it ended).
    why: str = ""
    #: Set by a ``SagaCancelRequested`` ('cancelled by X: why'): undone before its pivot.
    cancel: str = ""
    #: ``SagaResumeRequested``: how often an operator resumed it, the last time and by whom.
    resumes: int = 0
    resumed_at: datetime | None = None
    resumed_by: str = ""

    def view(self) -> SagaView:
        steps = [
            self.steps.get(i, SagaStepView(index=i, name=s.name, node=s.node, command=s.command))
            for i, s in enumerate(self.plan)
        ]
        return SagaView(
            id=self.id,
            kind=self.kind,
            cluster=self.cluster,
            from_node=self.from_node,
            to_node=self.to_node,
            state=self.state,
            reason=self.reason,
            started_at=self.started_at,
            ended_at=self.ended_at,
            steps=steps,
        )

    def completed_steps(self) -> set[int]:
        return {i for i, s in self.steps.items() if s.state == "completed"}


AlertState = Literal["firing", "acknowledged", "cleared"]


@dataclass
class AlertRecord:
    """One alert (``alert_fold.py`` keeps it): the same fingerprint raised again is this
    record again (``count``); cleared, it moves to the cluster's ``cleared`` records."""

    code: str
    message: str
    #: When it was first raised (this episode: a raise after its clear starts a new one).
    raised_at: datetime
    node: str
    fingerprint: str = ""
    cluster: str = ""
    subject: str = ""
    severity: str = "warning"
    details: dict[str, Any] = field(default_factory=dict)
    last_raised_at: datetime | None = None
    count: int = 1
    #: The event that raised it first, and what caused that event (its cause link).
    event_id: str = ""
    causation_id: str | None = None
    state: AlertState = "firing"
    acknowledged_by: str = ""
    acknowledged_at: datetime | None = None
    ack_comment: str = ""
    cleared_at: datetime | None = None
    cleared_reason: str = ""
    #: The ids of the last events folded into it: one folded twice (the leader folds its own
    #: at once, then the stream delivers it) counts once.
    seen: deque[str] = field(default_factory=lambda: deque(maxlen=8))

    @property
    def labels(self) -> dict[str, str]:
        """What a silence matches on (``SILENCE_LABELS``)."""
        return {
            "code": self.code,
            "cluster": self.cluster,
            "node": self.node,
            "subject": self.subject,
            "severity": self.severity,
        }


@dataclass
class SilenceRecord:
    silence_id: str
    cluster: str
    matchers: dict[str, str]
    starts_at: datetime
    ends_at: datetime
    by: str
    comment: str
    created_at: datetime
    removed_at: datetime | None = None
    removed_by: str = ""

    def active(self, now: datetime) -> bool:
        return self.removed_at is None and self.starts_at <= now < self.ends_at

    def ended(self, now: datetime) -> bool:
        return self.removed_at is not None or self.ends_at <= now


#: Alerts that leave a cluster for an operator (saga_endings.STUCK, fencing.ALERT_CODE).
OPERATOR_ALERTS = frozenset({"saga.stuck", "fence.failed"})
#: Alerts a saga that completes after them resolves (cleared by its ``AlertCleared``, or
#: by the fold for a stream recorded before sagas sent those): the operator alerts, and a
#: refused automatic switchover (the cluster moved on).
RESOLVED_BY_SAGA = OPERATOR_ALERTS | {"switchover.refused"}


@dataclass
class ClusterRecord:
    name: str
    active: str | None = None
    epoch: int = 0
    nodes: dict[str, NodeRecord] = field(default_factory=dict)
    pending_failover: PendingFailover | None = None
    #: Why the last recommendation was withdrawn (until the next one or a role change).
    withdrawn_failover: str = ""
    #: Alerts raised on this cluster and not cleared (firing or acknowledged), by
    #: fingerprint.
    alerts: dict[str, AlertRecord] = field(default_factory=dict)
    #: The last cleared ones (at most ``alert_fold.MAX_CLEARED``), oldest first.
    cleared: OrderedDict[str, AlertRecord] = field(default_factory=OrderedDict)
    #: The last ``ClusterPaused`` not followed by a ``ClusterResumed`` (see ``paused``).
    maintenance: MaintenanceView | None = None
    #: When it last changed (an older pause or resume folded again late is ignored).
    maintenance_at: datetime | None = None

    def paused(self, now: datetime) -> MaintenanceView | None:
        """The pause in force at ``now``: a pause whose ``until`` has passed counts as
        resumed (the one place that decides it)."""
        m = self.maintenance
        if m is None or (m.until is not None and m.until <= now):
            return None
        return m

    def node(self, name: str) -> NodeRecord:
        if name not in self.nodes:
            self.nodes[name] = NodeRecord(name)
        return self.nodes[name]


@dataclass
class SwitchoverRequest:
    event_id: str
    cluster: str
    node: str
    to: str | None
    reason: str
    occurred_at: datetime
