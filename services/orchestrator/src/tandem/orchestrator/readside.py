"""What the orchestrator shows: views of clusters, nodes, sagas and groups over the state
projection and the live heartbeats and leases, and pages of the event stream."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

from nats.js.api import ConsumerConfig, DeliverPolicy

from tandem.events.bus import Bus
from tandem.events.cancel import raise_if_cancelled
from tandem.events.catalog.vocabulary import HealthStatus, ReplicaState
from tandem.events.errors import DecodeError
from tandem.events.names import SYSTEM_CLUSTER
from tandem.events.registry import decode_event
from tandem.events.subjects import EVENTS_STREAM, events_filter
from tandem.orchestrator.cluster_pages import ClusterPage, ClusterQuery, Pacer, page_of
from tandem.orchestrator.facade import InvalidQueryError, NotFoundError
from tandem.orchestrator.groups import group_service
from tandem.orchestrator.leader import LeaderLease
from tandem.orchestrator.liveness import Liveness, Seen
from tandem.orchestrator.rpo import rpo_of
from tandem.orchestrator.service_status import LastSaga, cluster_service, replica
from tandem.orchestrator.settings import OrchestratorFile, OrchestratorSettings
from tandem.orchestrator.state import ClusterState
from tandem.orchestrator.state_records import SagaRecord, worst
from tandem.orchestrator.views import (
    AlertView,
    ClusterView,
    EventView,
    GroupMemberView,
    GroupView,
    LastSagaView,
    NodeView,
    SagaView,
    ServiceStatus,
    event_view,
)

T = TypeVar("T")


def _last(saga: SagaRecord | None) -> LastSaga | None:
    return None if saga is None else LastSaga(saga.id, saga.kind, saga.state, saga.reason)


def _last_view(saga: SagaRecord | None) -> LastSagaView | None:
    if saga is None:
        return None
    return LastSagaView(
        id=saga.id,
        kind=saga.kind,
        state=saga.state,
        reason=saga.reason or saga.why,
        started_at=saga.started_at,
        ended_at=saga.ended_at,
    )


class OrchestratorViews:
    """The read side of ``Orchestrator`` (a mixin: it reads the attributes set there)."""

    bus: Bus
    s: OrchestratorSettings
    file: OrchestratorFile
    state: ClusterState
    liveness: Liveness
    leader: LeaderLease

    def is_leader(self) -> bool:
        return self.leader.is_leader()

    def _live_gauges(self, cluster: str, name: str | None) -> dict[str, float] | None:
        if name is None or not self.liveness.alive(cluster, name):
            return None
        beat = self.liveness.heartbeat(cluster, name)
        return dict(beat.queues) if beat is not None else None

    def _node_view(self, cluster: str, name: str) -> NodeView:
        c = self.state.cluster(cluster)
        rec = c.node(name)
        beat = self.liveness.heartbeat(cluster, name)
        entry = self.liveness.seen.get((cluster, name))
        alive = self.liveness.alive(cluster, name)
        is_active = name == c.active
        # Not known to match (its source restarted without a clean stop, no verify since):
        # out of sync, whatever the target itself last said.
        reported = ReplicaState.OUT_OF_SYNC if rec.unverified else rec.replication
        target = replica(
            is_active=is_active,
            alive=alive,
            reported=reported,
            reported_lag=(rec.lag_batches, rec.lag_bytes),
            gauges=self._live_gauges(cluster, name),
            active_gauges=None if is_active else self._live_gauges(cluster, c.active),
        )
        view = NodeView(
            name=name,
            identity=rec.identity,
            role=rec.role,
            health=rec.health,
            checks=dict(rec.checks),
            alive=alive,
            isolated=rec.isolated,
            fenced=rec.fenced,
            fenced_reason=rec.fenced_reason if rec.fenced else "",
            fenced_since=rec.fenced_since if rec.fenced else None,
            replication=None if is_active else reported,
            replica_state=target.state,
            lag_batches=target.lag_batches,
            lag_bytes=target.lag_bytes,
            lag_oldest_age_s=target.oldest_unapplied_age_s,
            awaiting_operator=rec.awaiting_operator,
            standby=rec.standby,
            standby_reason=rec.standby_reason,
            role_since=rec.role_since,
            failover_mode=self.liveness.mode(cluster, name),
            **self._ages(entry),
        )
        if beat is not None and alive:
            # A live heartbeat is newer than the record: it says what the node plays now.
            view = view.model_copy(
                update={
                    "identity": beat.identity or rec.identity,
                    "role": beat.role or rec.role,
                    "health": beat.health,
                    "checks": dict(beat.checks),
                    "isolated": beat.isolated,
                    "fenced": beat.fenced,
                    "fenced_reason": beat.fenced_reason if beat.fenced else "",
                    "fenced_since": beat.fenced_since if beat.fenced else None,
                    "guard_deadline": (
                        datetime.fromtimestamp(beat.serve_until, UTC)
                        if beat.serve_until is not None
                        else None
                    ),
                    "last_heartbeat_at": datetime.fromtimestamp(beat.sent_at, UTC),
                    "heartbeat_late_s": self._late(entry, beat.interval_s),
                }
            )
        elif entry is not None and beat is not None:
            view = view.model_copy(
                update={"last_heartbeat_at": datetime.fromtimestamp(beat.sent_at, UTC)}
            )
        return view

    def _ages(self, entry: Seen | None) -> dict[str, object]:
        """How long ago (this process's clock) its heartbeat and its lease renewal were
        last seen, and what its lease says."""
        if entry is None:
            return {}
        now = self.liveness.clock()

        def age(at: float | None) -> float | None:
            return None if at is None else round(max(0.0, now - at), 1)

        return {
            "heartbeat_age_s": age(entry.heartbeat_at),
            "lease_age_s": age(entry.lease_at),
            "lease_role": entry.lease_role,
            "lease_epoch": entry.lease_epoch,
            "public_address": entry.public,
        }

    def _late(self, entry: Seen | None, interval_s: float) -> float | None:
        """How long the heartbeats have been silent, once that is past 4 intervals (the
        peers' own detector's bound), or None."""
        at = entry.heartbeat_at if entry is not None else None
        if at is None:
            return None
        silent = self.liveness.clock() - at
        return round(silent, 1) if silent > max(4 * interval_s, 1.0) else None

    def _known(self, cluster: str) -> bool:
        rec = self.state.clusters.get(cluster)
        if rec is not None and (rec.active or rec.nodes):
            return True
        return cluster in self.liveness.nodes_by_cluster

    def _group_names(self) -> frozenset[str]:
        """The groups' names (asked for by every view: made again only when the groups
        are not the ones they were made from)."""
        groups = self.file.groups
        kept = getattr(self, "_group_names_of", None)
        if kept is None or kept[0] is not groups or kept[1] != len(groups):
            kept = (groups, len(groups), frozenset(g.name for g in groups))
            self._group_names_of = kept
        return kept[2]

    def _names(self) -> list[str]:
        names = {c for c in self.state.clusters if self._known(c)}
        names |= set(self.liveness.nodes_by_cluster)
        names -= self._group_names()
        names.discard(SYSTEM_CLUSTER)
        return sorted(names)

    def _node_names(self, cluster: str) -> list[str]:
        rec = self.state.cluster(cluster)
        names = set(rec.nodes) | self.liveness.nodes_by_cluster.get(cluster, set())
        if rec.active:
            names.add(rec.active)
        return sorted(names)

    def cluster(self, name: str) -> ClusterView:
        if not self._known(name) or name in self._group_names():
            raise NotFoundError(f"no cluster {name!r}")
        rec = self.state.cluster(name)
        nodes = [self._node_view(name, n) for n in self._node_names(name)]
        running = self.state.running_saga(name)
        alerts = sorted(rec.alerts.values(), key=lambda a: a.raised_at)
        last = self.state.last_saga(name)
        service, reason = cluster_service(
            rec.active, nodes, _last(last), alerts, rec.pending_failover
        )
        return ClusterView(
            name=name,
            active=rec.active,
            epoch=rec.epoch,
            nodes=nodes,
            saga=running.id if running else None,
            pending_failover=rec.pending_failover,
            health=worst([n.health for n in nodes if n.name == rec.active]),
            service=service,
            service_reason=reason,
            maintenance=rec.paused(datetime.now(UTC)),
            alerts=[
                AlertView(
                    code=a.code,
                    message=a.message,
                    node=a.node,
                    raised_at=a.raised_at,
                    fingerprint=a.fingerprint,
                    subject=a.subject,
                    state=a.state,
                )
                for a in alerts
            ],
            last_saga=_last_view(last),
            rpo=rpo_of(rec.active, nodes, self.file.rpo_target_for(name, self.s.rpo_target_s)),
        )

    async def cluster_page(
        self, query: ClusterQuery, keep: Callable[[ClusterView], T]
    ) -> ClusterPage[T]:
        members = None
        if query.group is not None:
            group = next((g for g in self.file.groups if g.name == query.group), None)
            if group is None:
                raise InvalidQueryError("group", f"no group named {query.group!r}")
            members = {m.cluster for m in group.members}
        return await page_of(
            query,
            self._names(),
            view=self.cluster,
            nodes_of=self._node_names,
            keep=keep,
            members=members,
        )

    async def each_cluster(self, visit: Callable[[ClusterView], object]) -> None:
        """``visit`` every cluster's view, in name order, a slice at a time."""
        await self.cluster_page(ClusterQuery(limit=None), visit)

    def saga(self, saga_id: str) -> SagaView:
        saga = self.state.sagas.get(saga_id)
        if saga is None:
            raise NotFoundError(f"no saga {saga_id!r}")
        return saga.view()

    def _member_view(self, cluster: str) -> ClusterView | None:
        return self.cluster(cluster) if self._known(cluster) else None

    async def groups(self) -> list[GroupView]:
        views = []
        pacer = Pacer()
        for group in self.file.groups:
            members = []
            for m in sorted(group.members, key=lambda m: m.priority):
                await pacer.turn()
                try:
                    view = self._member_view(m.cluster)
                except NotFoundError:
                    view = None
                members.append(
                    GroupMemberView(
                        cluster=m.cluster,
                        priority=m.priority,
                        depends_on=list(m.depends_on),
                        active=view.active if view else None,
                        health=view.health if view else HealthStatus.UNKNOWN,
                        service=view.service if view else ServiceStatus.DOWN,
                        service_reason=(
                            view.service_reason if view else "not known to the orchestrator"
                        ),
                    )
                )
            running = self.state.running_saga(group.name)
            service, reason = group_service(
                [(m.cluster, m.service, m.service_reason) for m in members],
                _last(self.state.last_saga(group.name)),
            )
            views.append(
                GroupView(
                    name=group.name,
                    members=members,
                    health=worst([m.health for m in members]),
                    saga=running.id if running else None,
                    service=service,
                    service_reason=reason,
                )
            )
        return views

    async def events(self, cluster: str | None, after: int, limit: int) -> list[EventView]:
        config = ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=after + 1
        )
        sub = await self.bus.js.subscribe(
            events_filter(cluster), stream=EVENTS_STREAM, ordered_consumer=True, config=config
        )
        out: list[EventView] = []
        try:
            while len(out) < limit:
                try:
                    raise_if_cancelled()  # 3.11's wait_for may have swallowed a cancel
                    msg = await sub.next_msg(timeout=0.5)
                except Exception:
                    break
                try:
                    event = decode_event(msg.data)
                except DecodeError:
                    continue
                out.append(event_view(msg.metadata.sequence.stream, event))
                if msg.metadata.num_pending == 0:
                    break
        finally:
            await sub.unsubscribe()
        return out
