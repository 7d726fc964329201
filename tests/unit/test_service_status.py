"""The service status fold (orchestrator/service_status.py and groups.group_service): what a
client of a cluster would see, with its reason, from the cluster's nodes, last saga and
alerts; and each target's replication state and lag."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from tandem.events.catalog.vocabulary import HealthStatus, ReplicaState, Role
from tandem.orchestrator import fencing, saga_endings
from tandem.orchestrator.groups import group_service
from tandem.orchestrator.service_status import (
    LastSaga,
    cluster_service,
    replica,
    worst_service,
)
from tandem.orchestrator.state_records import OPERATOR_ALERTS, AlertRecord
from tandem.orchestrator.views import NodeView, PendingFailover, ServiceStatus

OK = HealthStatus.OK
AT = datetime(2025, 11, 25, 10, 0, 0, tzinfo=UTC)


def active(name: str = "primary", **extra: Any) -> NodeView:
    fields: dict[str, Any] = {
        "name": name,
        "role": Role.ACTIVE,
        "health": OK,
        "checks": {"db": OK},
        "alive": True,
    }
    return NodeView(**{**fields, **extra})


def passive(name: str = "secondary", **extra: Any) -> NodeView:
    fields: dict[str, Any] = {
        "name": name,
        "role": Role.PASSIVE,
        "health": OK,
        "alive": True,
        "replica_state": "in_sync",
    }
    return NodeView(**{**fields, **extra})


def test_the_active_serving_and_its_passive_in_sync_is_serving() -> None:
    assert cluster_service("primary", [active(), passive()]) == (
        ServiceStatus.SERVING,
        "primary serves; secondary in sync",
    )


def test_a_trio_names_both_passives_in_sync() -> None:
    nodes = [active(), passive(), passive("tertiary")]
    assert cluster_service("primary", nodes)[1] == "primary serves; secondary and tertiary in sync"


def test_active_by_the_record_but_its_app_check_fails_is_down() -> None:
    failing = active(health=HealthStatus.CRITICAL, checks={"db": HealthStatus.CRITICAL})
    status, reason = cluster_service("primary", [failing, passive()])
    assert status is ServiceStatus.DOWN
    assert reason == "nobody serves: primary's application checks fail (db critical)"


def test_active_fenced_is_down_and_says_since_when_and_why() -> None:
    fenced = active(fenced=True, fenced_reason="lease lost", fenced_since=AT)
    status, reason = cluster_service("primary", [fenced, passive()])
    assert status is ServiceStatus.DOWN
    assert reason == "nobody serves: primary fenced itself at 2025-11-25 10:00:00 UTC: lease lost"


def test_an_active_not_heard_from_is_down() -> None:
    dead = active(alive=False, last_heartbeat_at=AT)
    status, reason = cluster_service("primary", [dead, passive()])
    assert status is ServiceStatus.DOWN
    assert (
        reason
        == "nobody serves: primary (the Active) is not heard from since 2025-11-25 10:00:00 UTC"
    )


def test_active_by_the_record_but_not_exposed_is_down() -> None:
    # The role Active is reported only once expose took effect: a node still passive (the
    # expose failed after the pivot) serves nobody.
    hidden = active(role=Role.PASSIVE)
    status, reason = cluster_service("primary", [hidden, passive()])
    assert status is ServiceStatus.DOWN
    assert "reports role passive (its identity is not exposed)" in reason


def test_an_active_without_any_check_is_degraded_not_serving_nor_down() -> None:
    """Nothing checks its application: never shown as plainly serving, but no outage
    either (nothing says it is down)."""
    unchecked = active(health=HealthStatus.UNKNOWN, checks={})
    status, reason = cluster_service("primary", [unchecked, passive()])
    assert status is ServiceStatus.DEGRADED
    assert "reports no application check: nothing confirms its application answers" in reason


def test_an_isolated_active_is_down() -> None:
    status, reason = cluster_service("primary", [active(isolated=True), passive()])
    assert status is ServiceStatus.DOWN
    assert "isolated" in reason


def test_no_active_in_the_record_is_down() -> None:
    assert cluster_service(None, [passive("primary"), passive()]) == (
        ServiceStatus.DOWN,
        "nobody serves: no node is Active",
    )


def test_an_active_that_never_reported_is_down() -> None:
    status, reason = cluster_service("primary", [passive()])
    assert status is ServiceStatus.DOWN
    assert reason == "nobody serves: primary (the Active by the role record) never reported"


def test_a_running_saga_is_named_while_nobody_serves() -> None:
    saga = LastSaga("s-1", "switchover", "running")
    _, reason = cluster_service("primary", [active(alive=False), passive()], saga)
    assert reason.endswith("(switchover s-1 in progress)")


def test_passive_out_of_sync_is_degraded() -> None:
    status, reason = cluster_service("primary", [active(), passive(replica_state="out_of_sync")])
    assert status is ServiceStatus.DEGRADED
    assert reason == "primary serves; but secondary is out of sync"


@pytest.mark.parametrize(
    ("passive_", "why"),
    [
        (passive(alive=False), "secondary is not heard from"),
        (passive(fenced=True), "secondary is fenced"),
        (passive(replica_state="catching_up"), "secondary is catching up"),
        (passive(replica_state="stopped"), "secondary is stopped"),
        (passive(replica_state=None), "secondary is not reporting replication"),
    ],
)
def test_a_passive_that_does_not_protect_makes_it_degraded(passive_: NodeView, why: str) -> None:
    status, reason = cluster_service("primary", [active(), passive_])
    assert status is ServiceStatus.DEGRADED
    assert reason == f"primary serves; but {why}"


def test_one_passive_of_a_trio_behind_is_degraded_naming_the_one_in_sync() -> None:
    nodes = [active(), passive(), passive("tertiary", alive=False)]
    status, reason = cluster_service("primary", nodes)
    assert status is ServiceStatus.DEGRADED
    assert reason == "primary serves; secondary in sync; but tertiary is not heard from"


def test_a_check_warning_on_the_active_is_degraded() -> None:
    warned = active(health=HealthStatus.WARNING, checks={"db": OK, "disk": HealthStatus.WARNING})
    status, reason = cluster_service("primary", [warned, passive()])
    assert status is ServiceStatus.DEGRADED
    assert (
        reason
        == "primary serves; secondary in sync; but primary has a check warning (disk warning)"
    )


def test_a_single_node_serves_degraded() -> None:
    assert cluster_service("primary", [active()]) == (
        ServiceStatus.DEGRADED,
        "primary serves; but no Passive node",
    )


def test_last_saga_needs_operator_is_needs_operator_and_says_who_serves() -> None:
    saga = LastSaga(
        "s-9", "failover", "needs_operator", "step 3 (start) failed after the role changed"
    )
    nodes = [active(health=HealthStatus.CRITICAL, checks={"db": HealthStatus.CRITICAL}), passive()]
    status, reason = cluster_service("primary", nodes, saga)
    assert status is ServiceStatus.NEEDS_OPERATOR
    assert reason == (
        "needs an operator: failover s-9 stopped for an operator: step 3 (start) failed after the "
        "role changed; nobody serves: primary's application checks fail (db critical)"
    )


def test_needs_operator_holds_even_when_the_active_serves() -> None:
    saga = LastSaga("s-9", "switchover", "needs_operator", "stuck")
    status, reason = cluster_service("primary", [active(), passive()], saga)
    assert status is ServiceStatus.NEEDS_OPERATOR
    assert reason.endswith("; primary serves; secondary in sync")


def test_an_earlier_saga_needing_an_operator_no_longer_counts_once_a_later_one_completed() -> None:
    later = LastSaga("s-10", "switchover", "completed")
    assert cluster_service("primary", [active(), passive()], later)[0] is ServiceStatus.SERVING


@pytest.mark.parametrize("code", sorted(OPERATOR_ALERTS))
def test_an_open_operator_alert_is_needs_operator(code: str) -> None:
    alert = AlertRecord(code, "fencing primary failed", AT, "primary")
    status, reason = cluster_service(
        "secondary", [active("secondary"), passive("primary")], None, [alert]
    )
    assert status is ServiceStatus.NEEDS_OPERATOR
    assert reason.startswith(f"needs an operator: alert {code} at 2025-11-25 10:00:00 UTC: fencing")


def test_other_alerts_do_not_call_for_an_operator() -> None:
    alert = AlertRecord("replicator.disk_full", "disk full", AT, "secondary")
    assert (
        cluster_service("primary", [active(), passive()], None, [alert])[0] is ServiceStatus.SERVING
    )


def test_the_operator_alert_codes_are_the_runners_and_the_fencers() -> None:
    assert {saga_endings.STUCK, fencing.ALERT_CODE} == OPERATOR_ALERTS


# -- groups -----------------------------------------------------------------------------------


def test_a_group_is_its_worst_member_naming_it() -> None:
    members = [
        ("sql", ServiceStatus.SERVING, "a serves"),
        ("web", ServiceStatus.DOWN, "nobody serves: w1 fenced itself"),
        ("api", ServiceStatus.DEGRADED, "x serves; but y is stopped"),
    ]
    assert group_service(members) == (
        ServiceStatus.DOWN,
        "web is down: nobody serves: w1 fenced itself",
    )


def test_a_group_whose_members_all_serve_is_serving() -> None:
    members = [("sql", ServiceStatus.SERVING, ""), ("web", ServiceStatus.SERVING, "")]
    assert group_service(members) == (ServiceStatus.SERVING, "every member serves (sql, web)")


def test_a_group_counts_the_other_members_as_bad() -> None:
    members = [("a", ServiceStatus.DOWN, "r1"), ("b", ServiceStatus.DOWN, "r2")]
    assert group_service(members)[1] == "a is down: r1 (and 1 more member down)"


def test_a_group_saga_stopped_for_an_operator_makes_the_group_need_one() -> None:
    members = [("sql", ServiceStatus.SERVING, "")]
    saga = LastSaga("g-1", "group_switchover", "needs_operator", "web stuck")
    assert group_service(members, saga) == (
        ServiceStatus.NEEDS_OPERATOR,
        "needs an operator: group switchover g-1 stopped for an operator: web stuck",
    )


def test_the_order_of_service_statuses() -> None:
    assert worst_service([ServiceStatus.SERVING, ServiceStatus.DEGRADED]) is ServiceStatus.DEGRADED
    assert worst_service([ServiceStatus.NEEDS_OPERATOR, ServiceStatus.DOWN]) is (
        ServiceStatus.NEEDS_OPERATOR
    )


# -- per target replication ---------------------------------------------------------------------


def test_the_active_has_no_replication_state_and_no_lag() -> None:
    got = replica(
        is_active=True,
        alive=True,
        reported=ReplicaState.OUT_OF_SYNC,
        reported_lag=(4, 208),
        gauges={"receive_queue_batches": 4, "receive_queue_bytes": 208},
        active_gauges=None,
    )
    assert (got.state, got.lag_batches, got.lag_bytes) == (None, 0, 0)
    assert got.oldest_unapplied_age_s == 0.0  # 0, not unknown: nothing waits for the Active


def test_a_live_target_lags_by_its_receive_queue_and_the_actives_send_queue() -> None:
    got = replica(
        is_active=False,
        alive=True,
        reported=ReplicaState.IN_SYNC,
        reported_lag=(9, 9999),  # the last event's figures are older than the gauges
        gauges={
            "receive_queue_batches": 2,
            "receive_queue_bytes": 300,
            "receive_queue_oldest_age_s": 1.5,
        },
        active_gauges={
            "send_queue_batches": 1,
            "send_queue_bytes": 50,
            "send_queue_oldest_age_s": 0.2,
        },
    )
    assert (got.state, got.lag_batches, got.lag_bytes) == ("in_sync", 3, 350)
    assert got.oldest_unapplied_age_s == 1.5  # the older of the two queues' oldest


def test_the_oldest_unapplied_change_may_be_the_one_the_active_still_holds() -> None:
    # the target has applied all it received; the bus has been away from the Active
    got = replica(
        is_active=False,
        alive=True,
        reported=ReplicaState.IN_SYNC,
        reported_lag=(0, 0),
        gauges={"receive_queue_batches": 0, "receive_queue_oldest_age_s": 0.0},
        active_gauges={"send_queue_batches": 40, "send_queue_oldest_age_s": 12.5},
    )
    assert got.oldest_unapplied_age_s == 12.5
    no_active = replica(
        is_active=False,
        alive=True,
        reported=ReplicaState.IN_SYNC,
        reported_lag=(0, 0),
        gauges={"receive_queue_batches": 1, "receive_queue_oldest_age_s": 3.0},
        active_gauges=None,  # not heard from: what it holds is not known here
    )
    assert no_active.oldest_unapplied_age_s == 3.0


def test_the_oldest_unapplied_age_is_unknown_without_the_targets_live_gauges() -> None:
    def age(gauges: dict[str, float] | None, alive: bool = True) -> float | None:
        return replica(
            is_active=False,
            alive=alive,
            reported=ReplicaState.IN_SYNC,
            reported_lag=(5, 500),
            gauges=gauges,
            active_gauges={"send_queue_batches": 1, "send_queue_oldest_age_s": 2.0},
        ).oldest_unapplied_age_s

    assert age(None, alive=False) is None  # not heard from: no event carries the age
    assert age({}) is None  # alive, not replicating (yet)
    assert age({"receive_queue_batches": 0}) is None  # a replicator too old to report it


@pytest.mark.parametrize(
    ("reported", "shown"),
    [
        (ReplicaState.IN_SYNC, "in_sync"),
        (ReplicaState.SYNCING, "catching_up"),
        (ReplicaState.OUT_OF_SYNC, "out_of_sync"),
        (ReplicaState.PAUSED, "stopped"),
    ],
)
def test_reported_states_map_to_the_shown_ones(reported: ReplicaState, shown: str) -> None:
    got = replica(
        is_active=False,
        alive=True,
        reported=reported,
        reported_lag=(0, 0),
        gauges={},
        active_gauges={},
    )
    assert got.state == shown


def test_a_target_not_heard_from_is_stopped_with_its_last_known_lag() -> None:
    got = replica(
        is_active=False,
        alive=False,
        reported=ReplicaState.IN_SYNC,
        reported_lag=(5, 500),
        gauges=None,
        active_gauges={"send_queue_batches": 1, "send_queue_bytes": 1},
    )
    assert (got.state, got.lag_batches, got.lag_bytes) == ("stopped", 5, 500)


def test_a_live_target_that_never_reported_a_state_is_in_sync_once_it_replicates() -> None:
    replicating = {"receive_queue_batches": 0, "receive_queue_bytes": 0, "applied_seq": 3}
    got = replica(
        is_active=False,
        alive=True,
        reported=None,
        reported_lag=(0, 0),
        gauges=replicating,
        active_gauges=None,
    )
    assert got.state == "in_sync"
    silent = replica(
        is_active=False,
        alive=True,
        reported=None,
        reported_lag=(0, 0),
        gauges={},
        active_gauges=None,
    )
    assert silent.state is None


def test_a_failover_waiting_for_an_operators_confirmation_needs_an_operator() -> None:
    """Managed mode, the Active gone: nobody serves until an operator confirms, and the
    status says so, and how, rather than a bare down."""
    pending = PendingFailover(failed_node="primary", to="secondary", reason="t", recommended_at=AT)
    dead = active(alive=False, last_heartbeat_at=AT)
    status, reason = cluster_service("primary", [dead, passive()], pending_failover=pending)
    assert status is ServiceStatus.NEEDS_OPERATOR
    assert reason.startswith("needs an operator: failover to secondary recommended at ")
    assert "(tandem failover --confirm); nobody serves: primary (the Active) is not heard" in reason
    # A recommendation left over while the Active serves again changes nothing.
    assert cluster_service("primary", [active(), passive()], pending_failover=pending)[0] is (
        ServiceStatus.SERVING
    )
