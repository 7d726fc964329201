"""The alert lifecycle in the orchestrator's real projection (issue 19): one alert per
fingerprint (raised twice: count 2; folded twice: counted once), acknowledged, cleared into
the bounded cleared list, raised again as a new episode; a central service's clear of a
code it did not raise (streams from before fingerprints); a completed saga resolving the
operator alerts; silences in force until their end or their removal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tandem.events.catalog import (
    AlertAcknowledged,
    AlertCleared,
    AlertRaised,
    HealthChanged,
    SilenceCreated,
    SilenceRemoved,
)
from tandem.events.catalog.alerts import (
    AlertAcknowledgedPayload,
    AlertClearedPayload,
    AlertRaisedPayload,
    SilenceCreatedPayload,
    SilenceRemovedPayload,
    alert_fingerprint,
)
from tandem.events.catalog.health import HealthChangedPayload
from tandem.events.catalog.vocabulary import HealthStatus, Severity
from tandem.events.names import SYSTEM_CLUSTER
from tandem.orchestrator import alert_fold
from tandem.orchestrator.state import ClusterState

T0 = datetime(2026, 12, 3, 5, 0, tzinfo=UTC)
C = "demo"


def raised(
    code: str = "replicator.disk_full",
    *,
    node: str = "secondary",
    subject: str = "",
    at: datetime = T0,
    message: str = "disk full",
    severity: Severity = Severity.CRITICAL,
    cause: str | None = None,
) -> AlertRaised:
    return AlertRaised(
        cluster=C,
        node=node,
        occurred_at=at,
        causation_id=cause,
        payload=AlertRaisedPayload(code=code, severity=severity, message=message, subject=subject),
    )


def cleared(
    code: str = "replicator.disk_full",
    *,
    node: str = "secondary",
    subject: str = "",
    at: datetime = T0,
    reason: str = "applying again",
) -> AlertCleared:
    return AlertCleared(
        cluster=C,
        node=node,
        occurred_at=at,
        payload=AlertClearedPayload(code=code, reason=reason, subject=subject),
    )


def acked(fingerprint: str, at: datetime = T0) -> AlertAcknowledged:
    return AlertAcknowledged(
        cluster=C,
        node="orchestrator",
        occurred_at=at,
        payload=AlertAcknowledgedPayload(
            fingerprint=fingerprint, by="operator:ab12cd", comment="on it"
        ),
    )


def test_raised_twice_is_one_alert_counted_twice_and_a_redelivery_counts_once() -> None:
    state = ClusterState()
    first = raised(cause="ev-0")
    second = raised(
        at=T0 + timedelta(seconds=30), message="disk still full", severity=Severity.WARNING
    )
    for event in (
        first,
        second,
        second,
    ):  # the last: folded again (the leader's own, then the stream)
        state.apply(event)
    [alert] = state.cluster(C).alerts.values()
    assert (
        alert.fingerprint
        == first.fingerprint
        == alert_fingerprint(C, "secondary", "replicator.disk_full")
    )
    assert alert.count == 2 and alert.state == "firing"
    assert alert.raised_at == T0 and alert.last_raised_at == T0 + timedelta(seconds=30)
    assert (alert.message, alert.severity) == ("disk still full", "warning")
    # The cause link is the first raise's: its id and what caused it.
    assert (alert.event_id, alert.causation_id) == (first.id, "ev-0")


def test_same_code_on_two_nodes_or_two_subjects_are_two_alerts() -> None:
    state = ClusterState()
    state.apply(raised(node="primary"))
    state.apply(raised(node="secondary"))
    state.apply(raised("rule.web", node="primary", subject="web"))
    state.apply(raised("rule.web", node="primary", subject="db"))
    assert len(state.cluster(C).alerts) == 4
    state.apply(cleared(node="primary"))
    assert {
        a.node for a in state.cluster(C).alerts.values() if a.code == "replicator.disk_full"
    } == {"secondary"}


def test_ack_then_clear_then_raised_again_is_a_new_episode() -> None:
    state = ClusterState()
    state.apply(raised())
    fp = raised().fingerprint
    state.apply(acked(fp, T0 + timedelta(seconds=5)))
    alert = state.cluster(C).alerts[fp]
    assert alert.state == "acknowledged" and alert.acknowledged_by == "operator:ab12cd"
    assert alert.acknowledged_at == T0 + timedelta(seconds=5) and alert.ack_comment == "on it"
    state.apply(raised(at=T0 + timedelta(seconds=6)))  # still firing: the ack stays
    assert state.cluster(C).alerts[fp].state == "acknowledged"

    state.apply(cleared(at=T0 + timedelta(seconds=10)))
    assert fp not in state.cluster(C).alerts
    done = state.cluster(C).cleared[fp]
    assert done.state == "cleared" and done.cleared_reason == "applying again"
    assert done.cleared_at == T0 + timedelta(seconds=10) and done.count == 2
    state.apply(acked(fp))  # an ack that comes after the clear changes nothing
    assert state.cluster(C).cleared[fp].state == "cleared"

    state.apply(raised(at=T0 + timedelta(seconds=20)))
    again = state.cluster(C).alerts[fp]
    assert (
        again.state == "firing"
        and again.count == 1
        and again.raised_at == T0 + timedelta(seconds=20)
    )
    assert fp not in state.cluster(C).cleared


def test_cleared_alerts_are_bounded_oldest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(alert_fold, "MAX_CLEARED", 3)
    state = ClusterState()
    for i in range(5):
        state.apply(raised(subject=f"t{i}"))
        state.apply(cleared(subject=f"t{i}"))
    assert [a.subject for a in state.cluster(C).cleared.values()] == ["t2", "t3", "t4"]


def test_a_node_clears_only_its_own_a_central_service_clears_the_code() -> None:
    state = ClusterState()
    for node in ("primary", "secondary"):  # the cluster's nodes, as their events make them
        health = HealthChangedPayload(
            application="web", plugin="web", status=HealthStatus.OK, previous=None, message=""
        )
        state.apply(HealthChanged(cluster=C, node=node, payload=health))
    state.apply(raised("dns.update_missing.erp", node="primary"))
    state.apply(cleared("dns.update_missing.erp", node="secondary"))  # a node of the cluster
    assert len(state.cluster(C).alerts) == 1
    # The dns_updater (no node of the cluster), as streams recorded before fingerprints hold.
    state.apply(cleared("dns.update_missing.erp", node="dns-updater"))
    assert not state.cluster(C).alerts


def test_silences_are_in_force_until_they_end_or_are_removed() -> None:
    state = ClusterState()
    created = SilenceCreated(
        cluster=SYSTEM_CLUSTER,  # of no single cluster: still folded
        node="orchestrator",
        occurred_at=T0,
        payload=SilenceCreatedPayload(
            silence_id="s1",
            matchers={"code": "rule.web"},
            starts_at=T0,
            ends_at=T0 + timedelta(hours=2),
            by="operator:ab12cd",
            comment="deploy",
        ),
    )
    state.apply(created)
    state.apply(created)
    silence = state.silences["s1"]
    assert silence.active(T0 + timedelta(hours=1))
    assert not silence.active(T0 + timedelta(hours=2))  # expired at its end
    assert silence.ended(T0 + timedelta(hours=3))
    state.apply(
        SilenceRemoved(
            cluster=SYSTEM_CLUSTER,
            node="orchestrator",
            occurred_at=T0 + timedelta(minutes=5),
            payload=SilenceRemovedPayload(silence_id="s1", by="operator:ab12cd"),
        )
    )
    assert not silence.active(T0 + timedelta(minutes=10))
    assert (
        silence.removed_at == T0 + timedelta(minutes=5) and silence.removed_by == "operator:ab12cd"
    )


def test_a_central_services_own_alert_is_kept_under_the_system_cluster() -> None:
    state = ClusterState()
    own = AlertRaised(
        cluster=SYSTEM_CLUSTER,
        node="notifier",
        payload=AlertRaisedPayload(
            code="notifier.route_failing", severity=Severity.WARNING, message="m", subject="mail"
        ),
    )
    state.apply(own)
    assert list(state.cluster(SYSTEM_CLUSTER).alerts) == [own.fingerprint]


def test_a_raise_and_its_clear_folded_at_once_then_delivered_again_change_nothing() -> None:
    """The leader folds its own decision's alert and its clear before the stream has them
    (the outbox sends them later): delivered then, neither opens the alert again."""
    state = ClusterState()
    up, down = raised(node="orchestrator"), cleared(node="orchestrator", at=T0 + timedelta(1))
    for event in (up, down, up, down):
        state.apply(event)
    assert not state.cluster(C).alerts
    assert state.cluster(C).cleared[up.fingerprint].count == 1
    again = raised(node="orchestrator", at=T0 + timedelta(2))
    state.apply(again)
    state.apply(up)  # the last episode's raise, once more
    assert state.cluster(C).alerts[up.fingerprint].count == 1
