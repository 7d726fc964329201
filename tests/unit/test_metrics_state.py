"""``/metrics``' state part over the real projection (``ClusterState``), read side and
telemetry, no bus: role, epoch, health, standby, pause, queue depths, sagas by kind and
state, their durations observed once each, failovers, open alerts."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tandem.events.catalog import (
    AlertCleared,
    AlertRaised,
    HealthChanged,
    NodeRoleAssumed,
    RoleChanged,
    SagaCompleted,
    SagaFailed,
    SagaStarted,
)
from tandem.events.catalog.alerts import AlertClearedPayload, AlertRaisedPayload
from tandem.events.catalog.health import HealthChangedPayload
from tandem.events.catalog.roles import NodeRoleAssumedPayload, RoleChangedPayload
from tandem.events.catalog.sagas import SagaEndedPayload, SagaStartedPayload
from tandem.events.catalog.vocabulary import HealthStatus, Identity, Role, SagaKind, Severity
from tandem.events.envelope import Event
from tandem.events.heartbeat import Heartbeat
from tandem.orchestrator.api.metrics import ApiMetrics
from tandem.orchestrator.liveness import Liveness, Seen
from tandem.orchestrator.readside import OrchestratorViews
from tandem.orchestrator.settings import OrchestratorFile, OrchestratorSettings
from tandem.orchestrator.state import ClusterState
from tandem.orchestrator.telemetry import TelemetrySource, queue_depths

T0 = datetime(2025, 11, 25, 10, 0, 0, tzinfo=UTC)
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Views(OrchestratorViews, TelemetrySource):
    def __init__(self) -> None:
        self.now = 100.0
        self.state = ClusterState()
        self.liveness = Liveness(None, default_timeout_s=5.0, clock=lambda: self.now)  # type: ignore[arg-type]
        self.s = OrchestratorSettings()
        self.file = OrchestratorFile(groups=[])

    def is_leader(self) -> bool:
        return True

    def fold(self, *events: Event) -> None:
        for event in events:
            self.state.apply(event)

    def beat(self, cluster: str, node: str, **fields: Any) -> None:
        beat = Heartbeat(cluster=cluster, node=node, seq=1, interval_s=0.25, sent_at=0.0, **fields)
        self.liveness.seen[(cluster, node)] = Seen(heartbeat=beat, heartbeat_at=self.now)


def role_changed(node: str, epoch: int) -> RoleChanged:
    payload = RoleChangedPayload(
        active_node=node, previous_active=None, new_epoch=epoch, reason="t"
    )
    return RoleChanged(cluster="demo", node="o", epoch=epoch, occurred_at=T0, payload=payload)


def assumed(node: str, identity: Identity, role: Role) -> NodeRoleAssumed:
    payload = NodeRoleAssumedPayload(identity=identity, role=role, reason="t")
    return NodeRoleAssumed(cluster="demo", node=node, occurred_at=T0, payload=payload)


def started(saga_id: str, kind: SagaKind, at: datetime) -> SagaStarted:
    payload = SagaStartedPayload(
        saga_id=saga_id, kind=kind, from_node="a", to_node="b", steps=["x"], reason="t"
    )
    return SagaStarted(cluster="demo", node="o", occurred_at=at, payload=payload)


def ended(saga_id: str, at: datetime, *, ok: bool) -> Event:
    payload = SagaEndedPayload(saga_id=saga_id, reason="t")
    kind = SagaCompleted if ok else SagaFailed
    return kind(cluster="demo", node="o", occurred_at=at, payload=payload)


def alert(code: str) -> AlertRaised:
    payload = AlertRaisedPayload(code=code, severity=Severity.CRITICAL, message="m")
    return AlertRaised(cluster="demo", node="a", occurred_at=T0, payload=payload)


def scrape(metrics: ApiMetrics, v: Views) -> Samples:
    asyncio.run(metrics.refresh(v))  # type: ignore[arg-type]
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def labels(**kw: str) -> frozenset[tuple[str, str]]:
    return frozenset(kw.items())


def a_cluster_with_history() -> Views:
    v = Views()
    health = HealthChangedPayload(
        application="app", plugin="http", status=HealthStatus.WARNING, previous=None,
        metrics={}, message="slow",
    )  # fmt: skip
    v.fold(
        role_changed("a", 1),
        assumed("a", Identity.PRIMARY, Role.ACTIVE),
        assumed("b", Identity.SECONDARY, Role.PASSIVE),
        HealthChanged(cluster="demo", node="a", occurred_at=T0, payload=health),
        started("s1", SagaKind.SWITCHOVER, T0),
        ended("s1", T0 + timedelta(seconds=4), ok=True),
        started("s2", SagaKind.FAILOVER, T0 + timedelta(seconds=10)),
        ended("s2", T0 + timedelta(seconds=13), ok=False),
        started("s3", SagaKind.FAILOVER, T0 + timedelta(seconds=20)),
        role_changed("b", 2),
        alert("dns.stale.app.example.net"),
        alert("fence.failed"),
        AlertCleared(
            cluster="demo", node="o", payload=AlertClearedPayload(code="fence.failed", reason="t")
        ),
    )
    v.beat(
        "demo",
        "b",
        role=Role.ACTIVE,
        health=HealthStatus.OK,
        queues={"send_queue_batches": 2, "send_queue_bytes": 300, "replicating_as_source": 1},
    )
    return v


def test_roles_epoch_health_and_queue_depths_per_node() -> None:
    got = scrape(ApiMetrics(), a_cluster_with_history())
    assert got[("tandem_cluster_epoch", labels(cluster="demo"))] == 2
    assert got[("tandem_cluster_paused", labels(cluster="demo"))] == 0
    b = {"cluster": "demo", "node": "b"}
    assert got[("tandem_node_role", labels(**b, role="active"))] == 1  # its live heartbeat
    assert got[("tandem_node_role", labels(**b, role="passive"))] == 0
    a = {"cluster": "demo", "node": "a"}
    assert got[("tandem_node_role", labels(**a, role="active"))] == 1  # as last recorded
    assert got[("tandem_node_health", labels(**a, status="warning"))] == 1
    assert got[("tandem_node_health", labels(**a, status="ok"))] == 0
    assert got[("tandem_node_health", labels(**b, status="ok"))] == 1
    assert got[("tandem_node_standby", labels(**b))] == 0
    assert got[("tandem_node_isolated", labels(**b))] == 0
    assert got[("tandem_node_queue_batches", labels(**b, queue="send"))] == 2
    assert got[("tandem_node_queue_bytes", labels(**b, queue="send"))] == 300
    assert not [k for k in got if k[0].startswith("tandem_node_queue") and ("node", "a") in k[1]]


def test_sagas_by_kind_and_state_failovers_and_open_alerts() -> None:
    got = scrape(ApiMetrics(), a_cluster_with_history())

    def sagas(kind: str, state: str) -> float:
        return got[("tandem_sagas", labels(cluster="demo", kind=kind, state=state))]

    assert sagas("switchover", "completed") == 1
    assert sagas("failover", "failed") == 1
    assert sagas("failover", "running") == 1
    assert got[("tandem_failovers_total", labels(cluster="demo"))] == 2
    assert got[("tandem_alerts_active", labels(cluster="demo", code="dns.stale.app.example.net"))]
    assert ("tandem_alerts_active", labels(cluster="demo", code="fence.failed")) not in got


def test_each_ended_saga_is_observed_once_however_often_scraped() -> None:
    v = a_cluster_with_history()
    metrics = ApiMetrics()
    scrape(metrics, v)
    got = scrape(metrics, v)
    switchover = labels(kind="switchover", outcome="completed")
    assert got[("tandem_saga_duration_seconds_count", switchover)] == 1
    assert got[("tandem_saga_duration_seconds_sum", switchover)] == 4
    bucket = labels(kind="switchover", outcome="completed", le="5.0")
    assert got[("tandem_saga_duration_seconds_bucket", bucket)] == 1
    failed = labels(kind="failover", outcome="failed")
    assert got[("tandem_saga_duration_seconds_count", failed)] == 1
    # The running one is observed when it ends, once.
    v.fold(ended("s3", T0 + timedelta(seconds=50), ok=True))
    got = scrape(metrics, v)
    got = scrape(metrics, v)
    done = labels(kind="failover", outcome="completed")
    assert got[("tandem_saga_duration_seconds_count", done)] == 1
    assert got[("tandem_saga_duration_seconds_sum", done)] == 30


def test_only_queue_gauges_of_a_heartbeat_become_queue_depths() -> None:
    depths = queue_depths(
        "c",
        "n",
        {
            "receive_queue_batches": 3,
            "receive_queue_bytes": 9,
            "receive_queue_oldest_age_s": 1.5,
            "applied_seq": 7,
            "replicating_as_source": 0,
        },
    )
    assert [(d.queue, d.batches, d.bytes, d.oldest_age_s) for d in depths] == [
        ("receive", 3, 9, 1.5)
    ]


def test_the_scrape_writes_the_state_as_the_registrys_encoder_would_in_both_formats() -> None:
    from prometheus_client.openmetrics.exposition import generate_latest as openmetrics

    v = a_cluster_with_history()
    v.fold(alert('odd "code" \\ with\nescapes'))
    metrics = ApiMetrics()
    for accept, encode in (
        ("text/plain", generate_latest),
        ("application/openmetrics-text; version=1.0.0", openmetrics),
    ):
        pieces, content_type = asyncio.run(metrics.scrape(v, accept))  # type: ignore[arg-type]
        body = b"".join(pieces)
        reference = encode(metrics.registry).decode()  # the same snapshot, by the registry
        if encode is openmetrics:
            assert content_type.startswith("application/openmetrics-text")
            assert body.endswith(b"# EOF\n") and body.count(b"# EOF") == 1

        # The same lines, the registry's request metrics aside (the scrape was one more).
        def lines(text: str) -> set[str]:
            return {line for line in text.splitlines() if "tandem_api_" not in line}

        assert lines(body.decode()) == lines(reference)
        assert "tandem_node_role" in body.decode()
