"""The overview's fields on the read side (``tandem status``): per node time in role,
heartbeat and lease ages, the lease's role, the failover mode; per cluster the open alerts
and the last saga (over the real projection and Liveness with a fake clock, no bus)."""

from __future__ import annotations

import json
from datetime import timedelta

from tests.unit.test_status_views import T0, Views, saga_started, serving_pair

from tandem.events.catalog import AlertRaised, SagaFailed
from tandem.events.catalog.alerts import AlertRaisedPayload
from tandem.events.catalog.sagas import SagaEndedPayload
from tandem.events.catalog.vocabulary import Severity


def test_a_node_says_since_when_it_plays_its_role_and_how_old_its_signs_of_life_are() -> None:
    v = Views()
    serving_pair(v)
    entry = v.liveness.seen[("demo", "a")]
    entry.lease_at, entry.lease_role, entry.lease_epoch = v.now - 0.3, "active", 1
    entry.failover_mode = "managed"
    v.now += 0.5
    body = json.loads(v.cluster("demo").model_dump_json())
    a, b = body["nodes"]
    assert a["role_since"] == T0.isoformat().replace("+00:00", "Z")
    assert (a["heartbeat_age_s"], a["lease_age_s"]) == (0.5, 0.8)
    assert (a["lease_role"], a["lease_epoch"], a["failover_mode"]) == ("active", 1, "managed")
    assert (b["lease_age_s"], b["failover_mode"]) == (None, "automatic")


def test_a_cluster_shows_its_open_alerts_and_its_last_saga() -> None:
    v = Views()
    serving_pair(v)
    stuck = AlertRaisedPayload(code="saga.stuck", severity=Severity.CRITICAL, message="expose")
    v.fold(
        saga_started("demo", "s1", T0),
        AlertRaised(cluster="demo", node="o", occurred_at=T0, payload=stuck),
        SagaFailed(
            cluster="demo",
            node="o",
            occurred_at=T0 + timedelta(seconds=3),
            payload=SagaEndedPayload(saga_id="s1", reason="step 5 failed", needs_operator=True),
        ),
    )
    view = v.cluster("demo")
    assert [(a.code, a.message) for a in view.alerts] == [("saga.stuck", "expose")]
    assert view.last_saga is not None
    assert (view.last_saga.id, view.last_saga.state, view.last_saga.reason) == (
        "s1",
        "needs_operator",
        "step 5 failed",
    )
