"""The read side's service status over the real projection: events folded by
``ClusterState``, heartbeats seen by ``Liveness`` (a fake clock, no bus), the views of
``OrchestratorViews`` and their JSON, groups, and the ``/metrics`` gauges set from them."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tandem.events.catalog import (
    AlertCleared,
    AlertRaised,
    HealthChanged,
    NodeRoleAssumed,
    NodeSelfFenced,
    ReplicationStarted,
    ReplicationStateChanged,
    RoleChanged,
    SagaCompleted,
    SagaFailed,
    SagaStarted,
    SyncCompleted,
)
from tandem.events.catalog.alerts import AlertClearedPayload, AlertRaisedPayload
from tandem.events.catalog.health import HealthChangedPayload
from tandem.events.catalog.replication import (
    ReplicationStartedPayload,
    ReplicationStateChangedPayload,
    SyncCompletedPayload,
)
from tandem.events.catalog.roles import (
    NodeRoleAssumedPayload,
    NodeSelfFencedPayload,
    RoleChangedPayload,
)
from tandem.events.catalog.sagas import SagaEndedPayload, SagaStartedPayload
from tandem.events.catalog.vocabulary import (
    HealthStatus,
    Identity,
    ReplicaState,
    Role,
    SagaKind,
    Severity,
)
from tandem.events.envelope import Event
from tandem.events.heartbeat import Heartbeat
from tandem.orchestrator.api.metrics import ApiMetrics
from tandem.orchestrator.liveness import Liveness, Seen
from tandem.orchestrator.readside import OrchestratorViews
from tandem.orchestrator.settings import (
    GroupConfig,
    GroupMember,
    OrchestratorFile,
    OrchestratorSettings,
)
from tandem.orchestrator.state import ClusterState
from tandem.orchestrator.views import ServiceStatus

T0 = datetime(2025, 11, 25, 10, 0, 0, tzinfo=UTC)


class Views(OrchestratorViews):
    def __init__(self, groups: list[GroupConfig] | None = None) -> None:
        self.now = 100.0
        self.state = ClusterState()
        self.liveness = Liveness(None, default_timeout_s=5.0, clock=lambda: self.now)  # type: ignore[arg-type]
        self.s = OrchestratorSettings()
        self.file = OrchestratorFile(groups=groups or [])

    def is_leader(self) -> bool:
        return True

    def fold(self, *events: Event) -> None:
        for event in events:
            self.state.apply(event)

    def beat(self, cluster: str, node: str, **fields: Any) -> None:
        beat = Heartbeat(cluster=cluster, node=node, seq=1, interval_s=0.25, sent_at=0.0, **fields)
        self.liveness.seen[(cluster, node)] = Seen(heartbeat=beat, heartbeat_at=self.now)


def role_changed(cluster: str, node: str, epoch: int, at: datetime = T0) -> RoleChanged:
    payload = RoleChangedPayload(
        active_node=node, previous_active=None, new_epoch=epoch, reason="t"
    )
    return RoleChanged(cluster=cluster, node=node, epoch=epoch, occurred_at=at, payload=payload)


def assumed(cluster: str, node: str, identity: Identity, role: Role) -> NodeRoleAssumed:
    payload = NodeRoleAssumedPayload(identity=identity, role=role, reason="t")
    return NodeRoleAssumed(cluster=cluster, node=node, occurred_at=T0, payload=payload)


def check(cluster: str, node: str, status: HealthStatus) -> HealthChanged:
    payload = HealthChangedPayload(
        application="db", plugin="db", status=status, previous=None, metrics={}, message="t"
    )
    return HealthChanged(cluster=cluster, node=node, occurred_at=T0, payload=payload)


def replication(cluster: str, target: str, state: ReplicaState, lag: tuple[int, int]) -> Event:
    payload = ReplicationStateChangedPayload(
        target=target, state=state, applied_seq=1, lag_ops=lag[0], lag_bytes=lag[1], reason="t"
    )
    return ReplicationStateChanged(cluster=cluster, node=target, occurred_at=T0, payload=payload)


def saga_started(cluster: str, saga_id: str, at: datetime) -> SagaStarted:
    payload = SagaStartedPayload(
        saga_id=saga_id,
        kind=SagaKind.FAILOVER,
        from_node="a",
        to_node="b",
        steps=["start"],
        reason="t",
    )
    return SagaStarted(cluster=cluster, node="orchestrator", occurred_at=at, payload=payload)


def saga_failed(cluster: str, saga_id: str, at: datetime, reason: str) -> SagaFailed:
    payload = SagaEndedPayload(saga_id=saga_id, reason=reason, needs_operator=True)
    return SagaFailed(cluster=cluster, node="orchestrator", occurred_at=at, payload=payload)


def saga_completed(cluster: str, saga_id: str, at: datetime) -> SagaCompleted:
    payload = SagaEndedPayload(saga_id=saga_id, reason="done")
    return SagaCompleted(cluster=cluster, node="orchestrator", occurred_at=at, payload=payload)


def serving_pair(v: Views, cluster: str = "demo") -> None:
    """a Active and serving, b Passive in sync (by the events and live heartbeats)."""
    v.fold(
        role_changed(cluster, "a", 1),
        assumed(cluster, "a", Identity.PRIMARY, Role.ACTIVE),
        assumed(cluster, "b", Identity.SECONDARY, Role.PASSIVE),
        check(cluster, "a", HealthStatus.OK),
        replication(cluster, "b", ReplicaState.IN_SYNC, (4, 208)),
    )
    v.beat(
        cluster,
        "a",
        role=Role.ACTIVE,
        health=HealthStatus.OK,
        checks={"db": HealthStatus.OK},
        queues={
            "send_queue_batches": 1,
            "send_queue_bytes": 10,
            "send_queue_oldest_age_s": 0.02,
            "replicating_as_source": 1,
        },
    )
    v.beat(
        cluster,
        "b",
        role=Role.PASSIVE,
        health=HealthStatus.OK,
        queues={
            "receive_queue_batches": 0,
            "receive_queue_bytes": 0,
            "receive_queue_oldest_age_s": 0.0,
            "applied_seq": 9,
        },
    )


def test_a_serving_cluster_says_so_in_its_json_with_live_lag_per_target() -> None:
    v = Views()
    serving_pair(v)
    view = v.cluster("demo")
    body = json.loads(view.model_dump_json())
    assert body["service"] == "serving"
    assert body["service_reason"] == "a serves; b in sync"
    assert body["health"] == "ok"  # kept for compatibility
    a, b = body["nodes"]
    assert (a["replica_state"], a["lag_batches"], a["lag_bytes"]) == (None, 0, 0)
    assert a["lag_oldest_age_s"] == 0
    assert a["replication"] is None
    # the stale event's 4 batches / 208 B are replaced by the live gauges (plus the Active's
    # send queue, which no target has yet)
    assert (b["replica_state"], b["lag_batches"], b["lag_bytes"]) == ("in_sync", 1, 10)
    assert b["lag_oldest_age_s"] == 0.02  # the batch the Active still holds


def test_the_active_whose_app_check_fails_is_down_while_its_heartbeat_is_fine() -> None:
    v = Views()
    serving_pair(v)
    v.beat(
        "demo",
        "a",
        role=Role.ACTIVE,
        health=HealthStatus.CRITICAL,
        checks={"db": HealthStatus.CRITICAL},
    )
    view = v.cluster("demo")
    assert view.service is ServiceStatus.DOWN
    assert view.service_reason == "nobody serves: a's application checks fail (db critical)"


def test_a_dead_active_is_down_and_its_target_keeps_its_last_lag() -> None:
    v = Views()
    serving_pair(v)
    v.now += 60  # both heartbeats are old now
    view = v.cluster("demo")
    assert view.service is ServiceStatus.DOWN
    assert view.service_reason.startswith("nobody serves: a (the Active) is not heard from")
    b = next(n for n in view.nodes if n.name == "b")
    assert (b.replica_state, b.lag_batches, b.lag_bytes) == ("stopped", 4, 208)


def test_a_fenced_active_by_its_event_is_down() -> None:
    v = Views()
    serving_pair(v)
    del v.liveness.seen[("demo", "a")]
    fenced = NodeSelfFencedPayload(reason="lease lost", actions=["hid"], fenced_at=T0)
    v.fold(NodeSelfFenced(cluster="demo", node="a", occurred_at=T0, payload=fenced))
    view = v.cluster("demo")
    assert view.service is ServiceStatus.DOWN


def test_a_saga_stopped_for_an_operator_then_a_later_completed_one() -> None:
    v = Views()
    serving_pair(v)
    v.fold(
        saga_started("demo", "s-1", T0),
        saga_failed(
            "demo", "s-1", T0 + timedelta(seconds=3), "start failed after the role changed"
        ),
    )
    view = v.cluster("demo")
    assert view.service is ServiceStatus.NEEDS_OPERATOR
    assert view.service_reason.startswith(
        "needs an operator: failover s-1 stopped for an operator: start failed after the role"
    )
    assert view.service_reason.endswith("; a serves; b in sync")
    v.fold(
        saga_started("demo", "s-2", T0 + timedelta(minutes=1)),
        saga_completed("demo", "s-2", T0 + timedelta(minutes=2)),
    )
    assert v.cluster("demo").service is ServiceStatus.SERVING


def test_an_open_fence_failed_alert_needs_an_operator_until_cleared_or_resolved() -> None:
    v = Views()
    serving_pair(v)
    raised = AlertRaisedPayload(code="fence.failed", severity=Severity.CRITICAL, message="no VM")
    v.fold(AlertRaised(cluster="demo", node="orchestrator", occurred_at=T0, payload=raised))
    view = v.cluster("demo")
    assert view.service is ServiceStatus.NEEDS_OPERATOR
    assert "alert fence.failed" in view.service_reason and "no VM" in view.service_reason
    cleared = AlertClearedPayload(code="fence.failed", reason="fenced by hand")
    v.fold(AlertCleared(cluster="demo", node="orchestrator", occurred_at=T0, payload=cleared))
    assert v.cluster("demo").service is ServiceStatus.SERVING
    # resolved as well by a saga started after it that completed (not by the saga it was in)
    later = T0 + timedelta(minutes=5)
    v.fold(AlertRaised(cluster="demo", node="orchestrator", occurred_at=later, payload=raised))
    v.fold(saga_started("demo", "s-3", T0), saga_completed("demo", "s-3", later))
    assert v.cluster("demo").service is ServiceStatus.NEEDS_OPERATOR
    v.fold(
        saga_started("demo", "s-4", later + timedelta(seconds=1)),
        saga_completed("demo", "s-4", later + timedelta(seconds=9)),
    )
    assert v.cluster("demo").service is ServiceStatus.SERVING


def test_groups_roll_up_to_their_worst_member_and_metrics_show_it() -> None:
    group = GroupConfig(
        name="payments",
        members=[GroupMember(cluster="sql", priority=1), GroupMember(cluster="web", priority=2)],
    )
    v = Views([group])
    serving_pair(v, "sql")
    serving_pair(v, "web")
    queues = {"receive_queue_batches": 2, "receive_queue_bytes": 5, "receive_queue_oldest_age_s": 4}
    v.beat("web", "b", role=Role.PASSIVE, health=HealthStatus.OK, fenced=True, queues=queues)
    (payments,) = asyncio.run(v.groups())
    assert payments.service is ServiceStatus.DEGRADED
    assert payments.service_reason == "web is degraded: a serves; but b is fenced"
    assert [m.service for m in payments.members] == [ServiceStatus.SERVING, ServiceStatus.DEGRADED]

    metrics = ApiMetrics()
    asyncio.run(metrics.refresh(v))  # type: ignore[arg-type]
    got = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(generate_latest(metrics.registry).decode())
        for s in family.samples
    }

    def service(cluster: str, status: str) -> float:
        labels = frozenset({("cluster", cluster), ("status", status)})
        return got[("tandem_cluster_service_status", labels)]

    assert service("sql", "serving") == 1 and service("sql", "down") == 0
    assert service("web", "degraded") == 1 and service("web", "serving") == 0
    group_labels = frozenset({("group", "payments"), ("status", "degraded")})
    assert got[("tandem_group_service_status", group_labels)] == 1
    node = frozenset({("cluster", "web"), ("node", "b")})
    assert got[("tandem_node_fenced", node)] == 1
    assert got[("tandem_node_active", node)] == 0
    assert got[("tandem_node_active", frozenset({("cluster", "web"), ("node", "a")}))] == 1
    assert got[("tandem_node_replication_lag_batches", node)] == 3  # 2 received + 1 to send
    assert got[("tandem_node_replication_lag_bytes", node)] == 15
    assert got[("tandem_node_replication_lag_oldest_age_seconds", node)] == 4
    web_a = frozenset({("cluster", "web"), ("node", "a")})
    assert got[("tandem_node_replication_lag_oldest_age_seconds", web_a)] == 0  # the Active


def test_metrics_have_no_oldest_age_for_a_target_not_heard_from() -> None:
    v = Views()
    serving_pair(v)
    v.now += 60  # b's (and a's) heartbeats are long gone
    metrics = ApiMetrics()
    asyncio.run(metrics.refresh(v))  # type: ignore[arg-type]
    names = {
        (s.name, s.labels.get("node"))
        for family in text_string_to_metric_families(generate_latest(metrics.registry).decode())
        for s in family.samples
    }
    assert ("tandem_node_replication_lag_bytes", "b") in names
    assert ("tandem_node_replication_lag_oldest_age_seconds", "b") not in names, "unknown"
    assert ("tandem_node_replication_lag_oldest_age_seconds", "a") in names  # the Active: 0


def _source_started(cluster: str, node: str, unverified: str) -> ReplicationStarted:
    payload = ReplicationStartedPayload(
        side="source", root="/data", capture="watch", mode="async", unverified_targets=unverified
    )
    return ReplicationStarted(cluster=cluster, node=node, occurred_at=T0, payload=payload)


def _sync_completed(cluster: str, source: str, target: str, ok: bool) -> SyncCompleted:
    payload = SyncCompletedPayload(
        target=target, files_checked=3, files_out_of_sync=0, bytes_sent=0, ok=ok, reason="t"
    )
    return SyncCompleted(cluster=cluster, node=source, occurred_at=T0, payload=payload)


def test_targets_of_a_source_restarted_after_a_crash_are_out_of_sync_until_verified() -> None:
    """Seen in the chaos run: an Active's agent frozen then killed with writes its capture had
    not journaled; restarted, its source verifies the Passive, but the Passive said in sync
    (it had applied all the journal) and a switchover onto it lost an acknowledged record."""
    v = Views()
    serving_pair(v)
    why = "a started as the source without a clean stop before"
    v.fold(_source_started("demo", "a", why))
    b = v.cluster("demo").nodes[1]
    assert (b.replication, b.replica_state) == (ReplicaState.OUT_OF_SYNC, "out_of_sync")
    assert v.cluster("demo").service is ServiceStatus.DEGRADED
    v.fold(_sync_completed("demo", "a", "b", ok=False))  # a failed verify changes nothing
    assert v.cluster("demo").nodes[1].replica_state == "out_of_sync"
    v.fold(_sync_completed("demo", "a", "b", ok=True))
    assert v.cluster("demo").nodes[1].replica_state == "in_sync"
    assert v.cluster("demo").service is ServiceStatus.SERVING


def test_a_clean_source_start_leaves_its_targets_as_they_say() -> None:
    v = Views()
    serving_pair(v)
    v.fold(_source_started("demo", "a", ""))
    assert v.cluster("demo").nodes[1].replica_state == "in_sync"


def test_an_active_whose_heartbeats_are_late_serves_unconfirmed_until_judged_gone() -> None:
    """Right after an Active dies the failure detector has not judged it yet (its failover
    timeout); its last heartbeat said all was well. The status does not repeat that guess:
    past 4 heartbeat intervals (1 s at least) it says the serving is unconfirmed."""
    v = Views()
    serving_pair(v)
    v.now += 0.9  # within the bound: on time
    assert v.cluster("demo").service is ServiceStatus.SERVING
    v.now += 0.9
    view = v.cluster("demo")
    assert view.service is ServiceStatus.DEGRADED
    assert view.service_reason == "a serves, unconfirmed: its heartbeats are silent for 1.8s"
    v.now += 5.0  # past the failover timeout (5 s here): judged gone
    assert v.cluster("demo").service is ServiceStatus.DOWN
