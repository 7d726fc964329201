"""Maintenance over the real projection and decisions (no bus: a fake clock for liveness,
the outbox as the decisions' output): the fold of pauses and standbys (the newest counts, an
expired pause counts as resumed), a node in standby never chosen, and a paused cluster whose
Active is gone gets a recommendation, not a failover."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tandem.events.catalog import (
    AlertRaised,
    ClusterPaused,
    ClusterResumed,
    FailoverRecommended,
    NodeStandbyChanged,
    ReplicationStateChanged,
    RoleChanged,
    SwitchoverRequested,
)
from tandem.events.catalog.maintenance import (
    ClusterPausedPayload,
    ClusterResumedPayload,
    NodeStandbyChangedPayload,
)
from tandem.events.catalog.operations import SwitchoverRequestedPayload
from tandem.events.catalog.replication import ReplicationStateChangedPayload
from tandem.events.catalog.roles import RoleChangedPayload
from tandem.events.catalog.vocabulary import ReplicaState
from tandem.events.heartbeat import Heartbeat
from tandem.events.outbox import Outbox
from tandem.orchestrator.core import Orchestrator
from tandem.orchestrator.decisions import Decisions
from tandem.orchestrator.facade import ConflictError
from tandem.orchestrator.leader import LeaderLease
from tandem.orchestrator.liveness import Liveness, Seen
from tandem.orchestrator.maintenance import PAUSE_EXPIRED
from tandem.orchestrator.settings import OrchestratorFile, OrchestratorSettings
from tandem.orchestrator.state import ClusterState

T0 = datetime.now(UTC).replace(microsecond=0)
C = "pg"


def paused(at: datetime, until: datetime | None = None, by: str = "alice") -> ClusterPaused:
    payload = ClusterPausedPayload(by=by, reason="kernel update", until=until)
    return ClusterPaused(cluster=C, node="orchestrator", occurred_at=at, payload=payload)


def resumed(at: datetime) -> ClusterResumed:
    payload = ClusterResumedPayload(by="bob", reason="done")
    return ClusterResumed(cluster=C, node="orchestrator", occurred_at=at, payload=payload)


def standby(node: str, on: bool, at: datetime = T0) -> NodeStandbyChanged:
    payload = NodeStandbyChangedPayload(target=node, standby=on, by="alice", reason="disk swap")
    return NodeStandbyChanged(cluster=C, node="orchestrator", occurred_at=at, payload=payload)


def test_a_pause_is_folded_and_the_newest_change_counts() -> None:
    state = ClusterState()
    state.apply(paused(T0))
    m = state.cluster(C).paused(T0 + timedelta(hours=1))
    assert m is not None and (m.by, m.reason, m.since, m.until) == (
        "alice",
        "kernel update",
        T0,
        None,
    )
    state.apply(resumed(T0 + timedelta(seconds=5)))
    assert state.cluster(C).paused(T0 + timedelta(seconds=6)) is None
    # The leader folded both at once; the stream delivers the pause again late: still resumed.
    state.apply(paused(T0))
    assert state.cluster(C).paused(T0 + timedelta(seconds=6)) is None
    state.apply(paused(T0 + timedelta(seconds=9), by="carol"))
    m = state.cluster(C).paused(T0 + timedelta(seconds=10))
    assert m is not None and m.by == "carol"


def test_a_pause_whose_until_passed_counts_as_resumed() -> None:
    state = ClusterState()
    state.apply(paused(T0, until=T0 + timedelta(minutes=30)))
    rec = state.cluster(C)
    assert rec.paused(T0 + timedelta(minutes=29)) is not None
    assert rec.paused(T0 + timedelta(minutes=30)) is None
    assert rec.maintenance is not None  # not resumed in the record yet: expire_pauses says it


def test_standby_is_folded_per_node_and_the_newest_counts() -> None:
    state = ClusterState()
    state.apply(standby("b", True))
    n = state.cluster(C).node("b")
    assert (n.standby, n.standby_reason) == (True, "disk swap")
    state.apply(standby("b", False, T0 + timedelta(seconds=1)))
    state.apply(standby("b", True))  # late
    assert (n.standby, n.standby_reason) == (False, "")


class CaughtUpWatch:
    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.stall_s = 3.0

    @property
    def known_until(self) -> float:
        return float(self.clock())


class Node(Orchestrator):
    """The real orchestrator over no bus: it leads, its clock is ``now``; what the
    decisions publish stays in its outbox."""

    def __init__(self) -> None:
        self.now = 0.0
        clock = lambda: self.now  # noqa: E731
        self.outbox = Outbox(None)  # type: ignore[arg-type]
        super().__init__(
            None,  # type: ignore[arg-type]
            OrchestratorSettings(),
            OrchestratorFile(),
            ClusterState(),
            Liveness(None, default_timeout_s=5.0, clock=clock),  # type: ignore[arg-type]
            LeaderLease(None, "orchestrator", clock=clock),  # type: ignore[arg-type]
            outbox=self.outbox,
        )
        # It has watched the leases from the start and is never behind: what it has seen of
        # them is all there is, up to now.
        self.liveness.watching_since = 0.0
        self.liveness.leases = CaughtUpWatch(clock)  # type: ignore[assignment]

    def is_leader(self) -> bool:
        return True

    def beat(self, node: str, **fields: Any) -> None:
        beat = Heartbeat(cluster=C, node=node, seq=1, interval_s=0.25, sent_at=0.0, **fields)
        self.liveness.seen[(C, node)] = Seen(heartbeat=beat, heartbeat_at=self.now)

    def published(self, kind: type) -> list[Any]:
        return [e for e, _ in self.outbox._queue if isinstance(e, kind)]


@pytest.fixture
def pair() -> Node:
    """Cluster pg: a Active (about to go silent), b Passive in sync and alive."""
    o = Node()
    role = RoleChangedPayload(active_node="a", previous_active=None, new_epoch=1, reason="t")
    o.state.apply(RoleChanged(cluster=C, node="a", epoch=1, payload=role))
    in_sync = ReplicationStateChangedPayload(
        target="b", state=ReplicaState.IN_SYNC, applied_seq=1, lag_ops=0, lag_bytes=0, reason="t"
    )
    o.state.apply(ReplicationStateChanged(cluster=C, node="b", payload=in_sync))
    o.beat("a")
    o.beat("b")
    return o


def decisions(o: Node) -> Decisions:
    d = Decisions(o)
    d._roles_read_at = float("inf")  # no role record to read: no bus
    return d


def test_a_node_in_standby_is_never_chosen(pair: Node) -> None:
    assert pair.choose_target(C, "a", None) == "b"
    pair.state.apply(standby("b", True))
    with pytest.raises(ConflictError, match="b is in standby: disk swap"):
        pair.choose_target(C, "a", None)
    with pytest.raises(ConflictError, match="cannot move pg to b: b is in standby: disk swap"):
        pair.choose_target(C, "a", "b")


async def test_a_paused_cluster_whose_active_is_gone_gets_a_recommendation(pair: Node) -> None:
    pair.state.apply(paused(datetime.now(UTC)))
    pair.now = 10.0
    pair.beat("b")  # a silent for 10 s; b alive
    said = await decisions(pair).cycle()
    assert any("recommended (paused)" in line for line in said), said
    (rec,) = pair.published(FailoverRecommended)
    assert (rec.payload.failed_node, rec.payload.to) == ("a", "b")
    assert "pg is paused by alice" in rec.payload.reason
    assert not pair.state.sagas  # no failover started


async def test_an_expired_pause_is_resumed_by_the_decisions(pair: Node) -> None:
    now = datetime.now(UTC)
    pair.state.apply(paused(now - timedelta(minutes=2), until=now - timedelta(minutes=1)))
    said = await decisions(pair).cycle()
    assert any(PAUSE_EXPIRED in line for line in said), said
    (event,) = pair.published(ClusterResumed)
    assert event.payload.reason == PAUSE_EXPIRED
    assert pair.state.cluster(C).maintenance is None
    assert not await pair.expire_pauses()  # said once


async def test_an_automatic_switchover_of_a_paused_cluster_is_refused(pair: Node) -> None:
    pair.state.apply(paused(datetime.now(UTC)))
    ask = SwitchoverRequestedPayload(
        to=None, requested_by="a", reason="db check failed", automatic=True
    )
    pair.state.apply(SwitchoverRequested(cluster=C, node="a", payload=ask))
    said = await decisions(pair).cycle()
    assert any("refused: pg is paused by alice" in line for line in said), said
    (alert,) = pair.published(AlertRaised)
    assert alert.payload.code == "switchover.refused"
    assert "no automatic switchover" in alert.payload.message
    assert not pair.state.sagas


def test_the_cli_reads_durations() -> None:
    from tandem.cli.maintenance import parse_duration

    assert parse_duration("90") == 90
    assert parse_duration("90s") == 90
    assert parse_duration("30m") == 1800
    assert parse_duration("2h") == 7200
    assert parse_duration("1h30m") == 5400
    assert parse_duration("1d") == 86400
    for bad in ("", "2x", "h", "1h 30m", "0", "0s", "-5m"):
        with pytest.raises(ValueError):
            parse_duration(bad)
