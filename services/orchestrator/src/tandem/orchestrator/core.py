"""The orchestrator: what it does when asked (switchover, failover, group switchover: the
group sagas are ``group_sagas.py``'s); what it shows is in ``readside.py``, decisions it takes
by itself in ``decisions.py``, running sagas in ``runner.py``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

from tandem.events.bus import Bus
from tandem.events.catalog import OperatorActionRecorded, SagaStarted
from tandem.events.catalog.operations import OperatorActionRecordedPayload
from tandem.events.catalog.sagas import SagaStartedPayload, SagaStepSpec
from tandem.events.catalog.vocabulary import ReplicaState, SagaKind
from tandem.events.ids import new_id
from tandem.events.names import SYSTEM_CLUSTER
from tandem.events.outbox import Outbox
from tandem.orchestrator.alerts import AlertActions
from tandem.orchestrator.dns_reconcile import DnsReconcileRequests
from tandem.orchestrator.facade import ConflictError, NotFoundError
from tandem.orchestrator.fencing import Fencer
from tandem.orchestrator.group_sagas import GroupSagas
from tandem.orchestrator.lag_history import LagHistory
from tandem.orchestrator.leader import LeaderLease
from tandem.orchestrator.live_feed import LiveFeed
from tandem.orchestrator.liveness import Liveness
from tandem.orchestrator.maintenance import MaintenanceActions
from tandem.orchestrator.nodectl import NodeControlActions
from tandem.orchestrator.plans import failover_plan, switchover_plan
from tandem.orchestrator.previews import ActionPreviews
from tandem.orchestrator.publishing import Publisher, lost_is_conflict
from tandem.orchestrator.readside import OrchestratorViews
from tandem.orchestrator.runner import SagaRunner
from tandem.orchestrator.saga_control import SagaControl
from tandem.orchestrator.settings import OrchestratorFile, OrchestratorSettings
from tandem.orchestrator.state import ClusterState
from tandem.orchestrator.state_records import ClusterRecord, SagaRecord
from tandem.orchestrator.telemetry import TelemetrySource
from tandem.orchestrator.views import LagHistoryView, LagPoint

log = logging.getLogger(__name__)


class Orchestrator(
    OrchestratorViews,
    AlertActions,
    MaintenanceActions,
    NodeControlActions,
    DnsReconcileRequests,
    TelemetrySource,
    SagaControl,
    GroupSagas,
    ActionPreviews,
):
    def __init__(
        self,
        bus: Bus,
        settings: OrchestratorSettings,
        file: OrchestratorFile,
        state: ClusterState,
        liveness: Liveness,
        leader: LeaderLease,
        *,
        outbox: Outbox | None = None,
    ) -> None:
        self.bus = bus
        self.s = settings
        self.file = file
        self.state = state
        self.liveness = liveness
        self.leader = leader
        #: Stored before going on (sagas, role changes), or queued in the outbox (decisions,
        #: their alerts, operator actions): the orchestrator's one way to publish.
        self.publisher = Publisher(bus, outbox=outbox)
        self.runner = SagaRunner(
            bus,
            settings.instance,
            still_leader=leader.is_leader,
            fencer=Fencer(bus, liveness, file),
            publisher=self.publisher,
            forward_budget_s=settings.forward_budget_s,
            transport_slack_s=settings.step_slack_s,
            gone=liveness.gone,
        )
        self.runner.member_step = self.member_step
        self.runner.resolved_alerts = state.resolved_by
        #: What the API's live stream sends: each event as the state folds it.
        self.live = LiveFeed(state.position)
        state.on_fold = self.live.folded
        #: The targets' lag over the last hour (sampled by ``service.run``'s task).
        self.lag = LagHistory(self.each_cluster, every_s=settings.lag_sample_s)
        self._starting = asyncio.Lock()  # one saga decision at a time: no two on a cluster

    def live_feed(self) -> LiveFeed:
        return self.live

    def lag_history(self, cluster: str, minutes: float) -> LagHistoryView:
        self.cluster(cluster)  # NotFoundError for an unknown one
        since = time.time() - minutes * 60
        return LagHistoryView(
            cluster=cluster,
            every_s=self.lag.every_s,
            keep_s=self.lag.keep_s,
            targets={
                node: [
                    LagPoint(at=datetime.fromtimestamp(t, UTC), lag_bytes=b, lag_s=s)
                    for t, b, s in points
                ]
                for node, points in self.lag.of(cluster, since).items()
            },
        )

    # -- choosing a target ----------------------------------------------------------------

    def refusal(self, cluster: str, node: str) -> str:
        """Why ``node`` may not become Active now, or ''."""
        view = self._node_view(cluster, node)
        if view.standby:
            return f"{node} is in standby: {view.standby_reason or 'no reason given'}"
        if not view.alive:
            return f"{node} is not alive (no heartbeat)"
        if view.isolated:
            return f"{node} is isolated: its network checks all fail"
        if not self.s.guard:
            return ""
        unverified = self.state.cluster(cluster).node(node).unverified
        if unverified:
            return f"{node} is not verified: {unverified}; its source verifies it (or: verify)"
        if view.replication is ReplicaState.OUT_OF_SYNC:
            return f"{node} is out of sync: verify & synchronize it first"
        if view.replication is ReplicaState.SYNCING:
            return f"{node} is being verified & synchronized: its replica is not complete yet"
        if view.lag_bytes > self.s.max_lag_bytes:
            return f"{node} lags {view.lag_bytes} bytes (bound {self.s.max_lag_bytes})"
        return ""

    def choose_target(self, cluster: str, exclude: str | None, to: str | None) -> str:
        """The node to make Active, or ConflictError with the reasons."""
        rec = self.state.cluster(cluster)
        if to is not None:
            if to not in self._node_names(cluster):
                raise NotFoundError(f"cluster {cluster} has no node {to!r}")
            if to == exclude:
                raise ConflictError(f"{to} is already the Active of {cluster}")
            why = self.refusal(cluster, to)
            if why:
                raise ConflictError(f"cannot move {cluster} to {to}: {why}")
            return to
        candidates = [n for n in self._node_names(cluster) if n != exclude]
        order = {identity: i for i, identity in enumerate(self.s.prefer)}

        def rank(name: str) -> tuple[int, str]:
            identity = self._node_view(cluster, name).identity
            return (order.get(identity, len(order)) if identity else len(order), name)

        reasons = []
        for name in sorted(candidates, key=rank):
            why = self.refusal(cluster, name)
            if not why:
                return name
            reasons.append(why)
        raise ConflictError(
            f"no node of {cluster} can take over from {exclude or rec.active}: "
            + ("; ".join(reasons) or "it has no other node")
        )

    # -- acting ---------------------------------------------------------------------------

    def _require_leader(self) -> None:
        if not self.is_leader():
            holder = self.leader.holder or "nobody yet"
            raise ConflictError(f"this orchestrator is not the leader (leader: {holder})")

    async def begin(
        self,
        kind: SagaKind,
        cluster: ClusterRecord,
        old: str | None,
        new: str,
        plan: list[SagaStepSpec],
        reason: str,
        *,
        automatic: bool = False,
        cause: str | None = None,
        parent: str | None = None,
    ) -> SagaRecord:
        saga_id = new_id()
        payload = SagaStartedPayload(
            saga_id=saga_id,
            kind=kind,
            from_node=old,
            to_node=new,
            steps=[s.name for s in plan],
            reason=reason,
            plan=plan,
            automatic=automatic,
            parent=parent,
        )
        started = SagaStarted(
            cluster=cluster.name,
            node=self.s.instance,
            epoch=cluster.epoch,
            correlation_id=saga_id,
            causation_id=cause,
            payload=payload,
        )
        # LeadershipLost when the bus stays away past the lease: stored or not, the saga is
        # not run here; if it was stored, the next leader resumes it.
        await self.publisher.stored(
            started, keep_going=self.is_leader, what=f"saga {saga_id}: SagaStarted"
        )
        # Fold our own event now: the live projection may not have it yet, and a second
        # request must see this saga running.
        self.state.apply(started)
        saga = self.state.sagas[saga_id]
        log.info(
            "saga %s: %s of %s from %s to %s: %s", saga_id, kind, cluster.name, old, new, reason
        )
        self.runner.start(saga)
        return saga

    async def switchover(
        self,
        cluster: str,
        to: str | None,
        actor: str,
        reason: str,
        *,
        automatic: bool = False,
        cause: str | None = None,
    ) -> str:
        async with self._starting, lost_is_conflict():
            self._require_leader()
            rec, target, plan = self.plan_switchover(cluster, to, automatic=automatic)
            assert rec.active is not None  # planned: it has one
            saga = await self.begin(
                SagaKind.SWITCHOVER,
                rec,
                rec.active,
                target,
                plan,
                f"{reason} (by {actor})",
                automatic=automatic,
                cause=cause,
            )
            return saga.id

    def plan_switchover(
        self, cluster: str, to: str | None, *, automatic: bool = False
    ) -> tuple[ClusterRecord, str, list[SagaStepSpec]]:
        """The target and steps of a switchover now, or NotFoundError / ConflictError with
        why it cannot run (what a preview shows, and what the switchover itself checks)."""
        if not self._known(cluster):
            raise NotFoundError(f"no cluster {cluster!r}")
        rec = self.state.cluster(cluster)
        if rec.active is None:
            raise ConflictError(f"{cluster} has no Active yet")
        if automatic and self.paused_why(cluster):
            raise ConflictError(f"{self.paused_why(cluster)}: no automatic switchover")
        running = self.state.running_saga(cluster)
        if running is not None:
            raise ConflictError(f"a {running.kind} saga ({running.id}) already runs on {cluster}")
        target = self.choose_target(cluster, rec.active, to)
        plan = switchover_plan(
            rec.active, target, rec.epoch, timeout_s=self.s.step_timeout_s, automatic=automatic
        )
        return rec, target, plan

    async def failover(self, cluster: str, to: str | None, actor: str, reason: str) -> str:
        async with self._starting, lost_is_conflict():
            self._require_leader()
            if not self._known(cluster):
                raise NotFoundError(f"no cluster {cluster!r}")
            return (await self._failover(cluster, to, f"{reason} (by {actor})", operator=True)).id

    async def _failover(
        self, cluster: str, to: str | None, reason: str, *, operator: bool
    ) -> SagaRecord:
        rec, target, plan = self.plan_failover(cluster, to, operator=operator)
        # Started by the decisions (not an operator): recorded as such (SagaStarted.automatic).
        return await self.begin(
            SagaKind.FAILOVER, rec, rec.active, target, plan, reason, automatic=not operator
        )

    def plan_failover(
        self, cluster: str, to: str | None, *, operator: bool
    ) -> tuple[ClusterRecord, str, list[SagaStepSpec]]:
        """The target and steps of a failover now, or ConflictError with why not."""
        rec = self.state.cluster(cluster)
        running = self.state.running_saga(cluster)
        if running is not None:
            raise ConflictError(f"a {running.kind} saga ({running.id}) already runs on {cluster}")
        old = rec.active
        if operator and old is not None and rec.pending_failover is None:
            gone = self.liveness.gone(cluster, old)
            if not gone:
                withdrawn = (
                    f"the failover recommendation was withdrawn ({rec.withdrawn_failover}); "
                    if rec.withdrawn_failover
                    else ""
                )
                raise ConflictError(
                    f"{withdrawn}{old} is alive (heartbeats or lease renewals arrive): "
                    "use a switchover"
                )
        target = self.choose_target(
            cluster, old, to or (rec.pending_failover.to if rec.pending_failover else None)
        )
        return rec, target, failover_plan(old, target, rec.epoch, timeout_s=self.s.step_timeout_s)

    async def record_operator_action(
        self, actor: str, action: str, arguments: dict[str, object], outcome: str, source: str
    ) -> None:
        cluster = arguments.get("cluster")
        if cluster is None and isinstance(arguments.get("saga_id"), str):  # the saga's cluster
            saga = self.state.sagas.get(str(arguments["saga_id"]))
            cluster = saga.cluster if saga is not None else None
        if cluster is None:  # an alert's or a silence's
            cluster = self.audit_cluster(arguments)
        event = OperatorActionRecorded(
            cluster=cluster
            if isinstance(cluster, str) and self._known(cluster)
            else SYSTEM_CLUSTER,
            node=self.s.instance,
            payload=OperatorActionRecordedPayload(
                actor=actor,
                action=action,
                arguments={**arguments, "source": source},
                outcome=outcome,
            ),
        )
        await self.publisher.later(event)  # the outbox stores it when the bus allows

    async def resume(self) -> None:
        """On election (again): carry on with the sagas left running, by a previous leader
        or by this one when it lost the leadership (their tasks stopped)."""
        for saga in list(self.state.sagas.values()):
            if saga.state == "running" and saga.parent is None:
                log.info("resuming saga %s (%s of %s)", saga.id, saga.kind, saga.cluster)
                self.runner.start(saga)
