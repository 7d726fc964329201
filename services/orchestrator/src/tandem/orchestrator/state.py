"""The orchestrator's state: a fold of ``TANDEM_EVENTS`` (nothing else is authoritative).

Clusters (Active, epoch), their nodes (identity, role played, health, isolation, fencing,
replication state), sagas with their steps, pending operator decisions, and the automatic
switchover requests not yet acted on. Live heartbeats refine the nodes' view (``Liveness``)
but never replace the record.

A saga is ``running``, then ``completed``, ``failed`` (compensated before its pivot) or
``needs_operator`` (stopped past its pivot, with a ``saga.stuck`` or ``fence.failed``
alert); only a running saga blocks another on its cluster.

Alerts are kept per cluster by fingerprint, firing, acknowledged or cleared
(``alert_fold.py``), and silences beside them; a ``saga.stuck``, ``fence.failed`` or
``switchover.refused`` one is also resolved when a saga started after it on the same cluster
completes (the operator's switchover or failover fixed what it was about; the saga's runner
sends their ``AlertCleared`` too).

The records it keeps (clusters, nodes, sagas, alerts, requests) are ``state_records.py``'s.
"""

from __future__ import annotations

from datetime import datetime

from tandem.events.catalog import (
    ClusterPaused,
    ClusterResumed,
    FailoverRecommendationWithdrawn,
    FailoverRecommended,
    HealthChanged,
    NetworkReachabilityChanged,
    NodeRoleAssumed,
    NodeSelfFenced,
    NodeStandbyChanged,
    NodeUnfenced,
    ReplicationStarted,
    ReplicationStateChanged,
    RoleChanged,
    SagaCancelRequested,
    SagaCompleted,
    SagaFailed,
    SagaResumeRequested,
    SagaStarted,
    SagaStepCompleted,
    SagaStepFailed,
    SagaStepStarted,
    ServiceStarted,
    SwitchoverRequested,
    SyncCompleted,
)
from tandem.events.catalog.vocabulary import Role
from tandem.events.envelope import Event
from tandem.events.names import SYSTEM_CLUSTER
from tandem.events.projection import Projection
from tandem.orchestrator.alert_fold import (
    ALERT_EVENTS,
    SILENCE_EVENTS,
    end_alert,
    fold_alert,
    fold_silence,
)
from tandem.orchestrator.nodectl_fold import NODE_CONTROL_EVENTS, fold_node_control
from tandem.orchestrator.saga_fold import fold_saga_control
from tandem.orchestrator.state_records import (
    RESOLVED_BY_SAGA,
    AlertRecord,
    ClusterRecord,
    SagaRecord,
    SilenceRecord,
    SwitchoverRequest,
)
from tandem.orchestrator.views import MaintenanceView, PendingFailover, SagaStepView


class ClusterState(Projection):
    name = "orchestrator-state"

    def __init__(self, position: int = 0) -> None:
        super().__init__(position)
        self.clusters: dict[str, ClusterRecord] = {}
        self.sagas: dict[str, SagaRecord] = {}
        #: The sagas of each cluster, oldest first (a cluster's view must not scan them all).
        self._sagas_of: dict[str, list[SagaRecord]] = {}
        #: Automatic switchover requests no saga has answered yet, by event id.
        self.requests: dict[str, SwitchoverRequest] = {}
        #: Silences by id, of every cluster (one may match several): see ``alert_fold``.
        self.silences: dict[str, SilenceRecord] = {}

    def cluster(self, name: str) -> ClusterRecord:
        if name not in self.clusters:
            self.clusters[name] = ClusterRecord(name)
        return self.clusters[name]

    def last_saga(self, cluster: str) -> SagaRecord | None:
        """The saga started last on this cluster (running or ended), if any."""
        return max(self._sagas_of.get(cluster, ()), key=lambda s: s.started_at, default=None)

    def running_saga(self, cluster: str) -> SagaRecord | None:
        for saga in self._sagas_of.get(cluster, ()):
            if saga.state == "running":
                return saga
        return None

    def apply(self, event: Event) -> None:
        if isinstance(event, SILENCE_EVENTS):  # one of no single cluster is filed under ours
            fold_silence(self.silences, event)
            return
        if isinstance(event, ALERT_EVENTS):  # a central service's own (cluster tandem) too
            fold_alert(self.cluster(event.cluster), event)
            return
        if event.cluster == SYSTEM_CLUSTER:
            return
        c = self.cluster(event.cluster)
        p = event.payload
        if isinstance(event, RoleChanged):
            c.active, c.epoch = event.payload.active_node, event.payload.new_epoch
            c.pending_failover, c.withdrawn_failover = None, ""
        elif isinstance(event, ServiceStarted):
            if event.payload.service == "agent":
                # A (re)started agent starts hidden and unfenced; a fence it then reports
                # from its previous run is history (its heartbeats say what it is now).
                n = c.node(event.node)
                n.fenced, n.agent_started_at = False, event.occurred_at
        elif isinstance(event, NodeRoleAssumed):
            n = c.node(event.node)
            if n.role != event.payload.role or n.role_since is None:
                n.role_since = event.occurred_at
            n.identity, n.role = event.payload.identity, event.payload.role
            if event.payload.role is Role.ACTIVE:
                n.fenced = False
                n.awaiting_operator = False
        elif isinstance(event, HealthChanged):
            n = c.node(event.node)
            n.checks = {**n.checks, event.payload.plugin: event.payload.status}
        elif isinstance(event, NetworkReachabilityChanged):
            c.node(event.node).isolated = event.payload.isolated
        elif isinstance(event, NodeUnfenced):
            c.node(event.node).fenced = False
        elif isinstance(event, NodeSelfFenced) and _of_this_run(
            event.payload.fenced_at, c.node(event.node).agent_started_at
        ):
            n = c.node(event.node)
            n.fenced = True
            n.fenced_reason, n.fenced_since = event.payload.reason, event.payload.fenced_at
        elif isinstance(event, ReplicationStarted) and event.payload.side == "source":
            c.node(event.node).unverified = ""  # the reference now
            if event.payload.unverified_targets:
                for name, n in c.nodes.items():
                    if name != event.node:
                        n.unverified = event.payload.unverified_targets
        elif isinstance(event, SyncCompleted) and event.payload.ok:
            c.node(event.payload.target).unverified = ""
        elif isinstance(event, ReplicationStateChanged):
            n = c.node(event.payload.target)
            n.replication = event.payload.state
            n.lag_batches, n.lag_bytes = event.payload.lag_ops, event.payload.lag_bytes
        elif isinstance(event, FailoverRecommendationWithdrawn):
            c.pending_failover = None
            c.withdrawn_failover = event.payload.reason
        elif isinstance(event, FailoverRecommended):
            c.withdrawn_failover = ""
            c.pending_failover = PendingFailover(
                failed_node=event.payload.failed_node,
                to=event.payload.to,
                reason=event.payload.reason,
                recommended_at=event.occurred_at,
            )
        elif isinstance(event, SwitchoverRequested):
            if event.payload.automatic:
                self.requests[event.id] = SwitchoverRequest(
                    event.id,
                    event.cluster,
                    event.node,
                    event.payload.to,
                    event.payload.reason,
                    event.occurred_at,
                )
        elif isinstance(event, ClusterPaused | ClusterResumed):
            # The newest counts: the leader folds its own at once, the stream again later.
            if c.maintenance_at is None or event.occurred_at >= c.maintenance_at:
                c.maintenance_at = event.occurred_at
                c.maintenance = (
                    MaintenanceView(
                        by=event.payload.by,
                        reason=event.payload.reason,
                        since=event.occurred_at,
                        until=event.payload.until,
                    )
                    if isinstance(event, ClusterPaused)
                    else None
                )
        elif isinstance(event, NodeStandbyChanged):
            n = c.node(event.payload.target)
            if n.standby_at is None or event.occurred_at >= n.standby_at:
                n.standby, n.standby_at = event.payload.standby, event.occurred_at
                n.standby_reason = event.payload.reason if event.payload.standby else ""
        elif isinstance(event, NODE_CONTROL_EVENTS):
            fold_node_control(c, event)
        elif isinstance(event, SagaStarted):
            self._saga_started(event)
        elif isinstance(event, SagaCancelRequested | SagaResumeRequested):
            fold_saga_control(self.sagas.get(event.payload.saga_id), event)
        elif isinstance(event, SagaStepStarted | SagaStepCompleted | SagaStepFailed):
            self._saga_step(event)
        elif isinstance(event, SagaCompleted | SagaFailed):
            saga = self.sagas.get(p.saga_id)  # type: ignore[attr-defined]
            # The first end counts: an end sent again late (an orchestrator's outbox after its
            # restart) never overturns the one the saga already had.
            if saga is not None and saga.state == "running":
                if isinstance(event, SagaCompleted):
                    saga.state = "completed"
                else:  # stopped past its pivot: for an operator, nothing was undone
                    saga.state = "needs_operator" if p.needs_operator else "failed"  # type: ignore[attr-defined]
                saga.reason = p.reason  # type: ignore[attr-defined]
                saga.ended_at = event.occurred_at
                # An automatic switchover leaves its old Active stopped for an operator; an
                # automatic failover's old Active is gone (fenced), nothing awaits there.
                automatic_switchover = saga.automatic and saga.kind == "switchover"
                if automatic_switchover and saga.state == "completed" and saga.from_node:
                    self.cluster(saga.cluster).node(saga.from_node).awaiting_operator = True
                if saga.state == "completed":
                    self._resolved_by(saga, event.occurred_at)

    def resolved_by(self, saga: SagaRecord) -> list[AlertRecord]:
        """The open alerts ``saga`` resolves when it completes: operator alerts (and refused
        automatic switchovers) of its cluster raised before it started (or before an
        operator resumed it: its own ``saga.stuck``)."""
        since = saga.resumed_at or saga.started_at
        return [
            alert
            for alert in self.cluster(saga.cluster).alerts.values()
            if alert.code in RESOLVED_BY_SAGA and alert.raised_at < since
        ]

    def _resolved_by(self, saga: SagaRecord, at: datetime) -> None:
        c = self.cluster(saga.cluster)
        for alert in self.resolved_by(saga):
            end_alert(c, alert, at, f"resolved: {saga.kind} {saga.id} completed")

    def _saga_started(self, event: SagaStarted) -> None:
        p = event.payload
        if p.saga_id in self.sagas:
            return  # the leader folded its own event before the stream delivered it
        saga = self.sagas[p.saga_id] = SagaRecord(
            id=p.saga_id,
            kind=p.kind,
            cluster=event.cluster,
            from_node=p.from_node,
            to_node=p.to_node,
            plan=list(p.plan),
            started_at=event.occurred_at,
            automatic=p.automatic,
            parent=p.parent,
            cause=event.causation_id,
            why=p.reason,
        )
        self._sagas_of.setdefault(event.cluster, []).append(saga)
        if event.causation_id is not None:
            self.requests.pop(event.causation_id, None)
        if p.kind in ("failover", "group_failover"):
            self.cluster(event.cluster).pending_failover = None

    def _saga_step(self, event: SagaStepStarted | SagaStepCompleted | SagaStepFailed) -> None:
        p = event.payload
        saga = self.sagas.get(p.saga_id)
        if saga is None or saga.state != "running":
            return  # an event sent again late (an outbox after a restart): the saga ended
        old = saga.steps.get(p.index)
        if old is not None and old.state == "completed" and not p.step.startswith("undo "):
            return  # a completed step never runs forward again: this one is late
        base = old or SagaStepView(
            index=p.index, name=p.step, node=p.target_node, command=p.command
        )
        if isinstance(event, SagaStepStarted):
            saga.steps[p.index] = base.model_copy(
                update={"state": "running", "started_at": event.occurred_at, "reason": ""}
            )
        elif isinstance(event, SagaStepCompleted):
            state = "compensated" if event.payload.result.get("compensation") else "completed"
            saga.steps[p.index] = base.model_copy(
                update={
                    "state": state,
                    "ended_at": event.occurred_at,
                    "reason": str(event.payload.result.get("reason", "")),
                }
            )
        else:
            saga.steps[p.index] = base.model_copy(
                update={
                    "state": "failed",
                    "ended_at": event.occurred_at,
                    "reason": event.payload.reason,
                }
            )


def _of_this_run(fenced_at: datetime, agent_started_at: datetime | None) -> bool:
    return agent_started_at is None or fenced_at >= agent_started_at
