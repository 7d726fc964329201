"""Saga history, cancel and resume over the real projection: the fold of SagaCancelRequested
and SagaResumeRequested (folded twice, nothing changes), which sagas may be cancelled (only
before the pivot), the history's summary (who, why, duration, outcome) and its selection,
and an automatic failover's old Active not left awaiting an operator."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tandem.events.catalog import (
    AlertRaised,
    SagaCancelRequested,
    SagaCompleted,
    SagaFailed,
    SagaResumeRequested,
    SagaStarted,
    SagaStepCompleted,
    SagaStepStarted,
)
from tandem.events.catalog.alerts import AlertRaisedPayload
from tandem.events.catalog.saga_control import SagaControlPayload
from tandem.events.catalog.sagas import (
    SagaEndedPayload,
    SagaStartedPayload,
    SagaStepCompletedPayload,
    SagaStepPayload,
)
from tandem.events.catalog.vocabulary import SagaKind, Severity
from tandem.orchestrator.history import select, summarize
from tandem.orchestrator.plans import failover_plan, switchover_plan
from tandem.orchestrator.saga_control import cancel_refusal
from tandem.orchestrator.state import ClusterState

T0 = datetime(2026, 12, 3, 5, 0, tzinfo=UTC)
C = "demo"


def started(
    saga_id: str,
    at: datetime = T0,
    *,
    kind: SagaKind = SagaKind.SWITCHOVER,
    reason: str = "patching (by operator:ab12cd)",
    automatic: bool = False,
    cluster: str = C,
) -> SagaStarted:
    plan = (
        switchover_plan("a", "b", 1, timeout_s=5, automatic=automatic)
        if kind is SagaKind.SWITCHOVER
        else failover_plan("a", "b", 1, timeout_s=5)
    )
    payload = SagaStartedPayload(
        saga_id=saga_id,
        kind=kind,
        from_node="a",
        to_node="b",
        steps=[s.name for s in plan],
        reason=reason,
        plan=plan,
        automatic=automatic,
    )
    return SagaStarted(cluster=cluster, node="o", occurred_at=at, payload=payload)


def step(saga_id: str, index: int, name: str, at: datetime, *, done: bool) -> object:
    p = SagaStepPayload(saga_id=saga_id, index=index, step=name, target_node="b", command="X")
    if done:
        return SagaStepCompleted(
            cluster=C,
            node="o",
            occurred_at=at,
            payload=SagaStepCompletedPayload(**p.model_dump(), result={"reason": "ok"}),
        )
    return SagaStepStarted(cluster=C, node="o", occurred_at=at, payload=p)


def ended(saga_id: str, at: datetime, *, ok: bool, stuck: bool = False, why: str = "r") -> object:
    payload = SagaEndedPayload(saga_id=saga_id, reason=why, needs_operator=stuck)
    return (SagaCompleted if ok else SagaFailed)(
        cluster=C, node="o", occurred_at=at, payload=payload
    )


def control(kind: type, saga_id: str, at: datetime, by: str = "operator:ab12cd") -> object:
    payload = SagaControlPayload(saga_id=saga_id, by=by, reason="stuck on expose")
    return kind(cluster=C, node="o", occurred_at=at, payload=payload)


def fold(*events: object) -> ClusterState:
    state = ClusterState()
    for e in events:
        state.apply(e)  # type: ignore[arg-type]
    return state


def test_a_cancel_is_folded_once_and_only_for_a_running_saga() -> None:
    state = fold(started("s1"), control(SagaCancelRequested, "s1", T0))
    assert state.sagas["s1"].cancel == "cancelled by operator:ab12cd: stuck on expose"
    state.apply(control(SagaCancelRequested, "s1", T0, by="someone-else"))  # type: ignore[arg-type]
    assert "operator:ab12cd" in state.sagas["s1"].cancel
    done = fold(started("s2"), ended("s2", T0, ok=True), control(SagaCancelRequested, "s2", T0))
    assert done.sagas["s2"].cancel == ""


def test_a_resume_runs_a_stopped_saga_again_and_folding_it_twice_changes_nothing() -> None:
    resume = control(SagaResumeRequested, "s1", T0 + timedelta(seconds=20))
    state = fold(started("s1"), ended("s1", T0 + timedelta(seconds=10), ok=False, stuck=True))
    assert state.sagas["s1"].state == "needs_operator"
    state.apply(resume)  # type: ignore[arg-type]
    saga = state.sagas["s1"]
    assert (saga.state, saga.ended_at, saga.resumes, saga.resumed_by) == (
        "running",
        None,
        1,
        "operator:ab12cd",
    )
    # It stops again; the stream then delivers the same resume the leader folded at once.
    state.apply(ended("s1", T0 + timedelta(seconds=30), ok=False, stuck=True))  # type: ignore[arg-type]
    state.apply(resume)  # type: ignore[arg-type]
    assert (saga.state, saga.resumes) == ("needs_operator", 1)
    # A resume of a failed (compensated) or completed saga changes nothing.
    failed = fold(started("s3"), ended("s3", T0, ok=False), control(SagaResumeRequested, "s3", T0))
    assert failed.sagas["s3"].state == "failed"


def test_a_resumed_saga_that_completes_clears_its_stuck_alert() -> None:
    alert = AlertRaised(
        cluster=C,
        node="o",
        occurred_at=T0 + timedelta(seconds=9),
        payload=AlertRaisedPayload(code="saga.stuck", severity=Severity.CRITICAL, message="m"),
    )
    state = fold(
        started("s1"),
        alert,
        ended("s1", T0 + timedelta(seconds=10), ok=False, stuck=True),
        control(SagaResumeRequested, "s1", T0 + timedelta(seconds=20)),
    )
    assert alert.fingerprint in state.cluster(C).alerts
    state.apply(ended("s1", T0 + timedelta(seconds=25), ok=True))  # type: ignore[arg-type]
    assert alert.fingerprint not in state.cluster(C).alerts
    assert state.cluster(C).cleared[alert.fingerprint].cleared_reason.startswith("resolved:")


def test_only_a_saga_before_its_pivot_may_be_cancelled() -> None:
    state = fold(started("s1"), step("s1", 0, "stop applications", T0, done=True))
    saga = state.sagas["s1"]
    assert cancel_refusal(saga, 1) == ""
    # The runner here has reached the role change (its events not folded yet): refused.
    assert "past its pivot: step 3 (change role) is changing the role" in cancel_refusal(saga, 3)
    state.apply(step("s1", 3, "change role", T0, done=True))  # type: ignore[arg-type]
    why = cancel_refusal(saga, None)
    assert "past its pivot: step 3 (change role) changed the role (b Active at epoch 2)" in why
    assert "only goes forward" in why
    state.apply(ended("s1", T0, ok=True))  # type: ignore[arg-type]
    assert "is completed: nothing to cancel" in cancel_refusal(saga, None)
    failover = fold(started("f1", kind=SagaKind.FAILOVER, reason="a silent"))
    assert cancel_refusal(failover.sagas["f1"], None) == ""  # before even its pivot
    failover.apply(step("f1", 0, "change role", T0, done=False))  # type: ignore[arg-type]
    assert "past its pivot" in cancel_refusal(failover.sagas["f1"], None)
    cancelled = fold(started("s2"), control(SagaCancelRequested, "s2", T0))
    assert "already being cancelled" in cancel_refusal(cancelled.sagas["s2"], None)


def test_history_says_who_why_how_long_and_how_it_ended() -> None:
    t1 = T0 + timedelta(seconds=4.5)
    state = fold(
        started("op", T0),
        ended("op", t1, ok=True, why="switchover of demo to b completed"),
        started(
            "auto", T0 + timedelta(minutes=1), reason="db down (by a (automatic))", automatic=True
        ),
        started(
            "fo",
            T0 + timedelta(minutes=2),
            kind=SagaKind.FAILOVER,
            reason="a silent for 2.0s",
            automatic=True,
        ),
        started("cx", T0 + timedelta(minutes=3)),
        control(SagaCancelRequested, "cx", T0 + timedelta(minutes=3)),
        ended("cx", T0 + timedelta(minutes=3, seconds=2), ok=False, why="cancelled by x"),
    )
    op = summarize(state.sagas["op"])
    assert (op.reason, op.who, op.automatic, op.outcome, op.duration_s, op.ended_at) == (
        "patching",
        "operator:ab12cd",
        False,
        "completed",
        4.5,
        t1,
    )
    assert op.outcome_reason == "switchover of demo to b completed"
    auto = summarize(state.sagas["auto"])
    assert (auto.reason, auto.who, auto.outcome, auto.duration_s) == (
        "db down",
        "a (automatic)",
        "running",
        None,
    )
    fo = summarize(state.sagas["fo"])
    assert (fo.who, fo.automatic, fo.reason) == ("orchestrator", True, "a silent for 2.0s")
    assert summarize(state.sagas["cx"]).outcome == "cancelled"


def test_history_is_newest_first_filtered_before_the_limit() -> None:
    state = fold(
        *(started(f"s{i}", T0 + timedelta(minutes=i)) for i in range(5)),
        started("other", T0 + timedelta(minutes=9), cluster="pg"),
    )
    sagas = list(state.sagas.values())
    assert [s.id for s in select(sagas, cluster=C, since=None, limit=3)] == ["s4", "s3", "s2"]
    since = T0 + timedelta(minutes=3)
    assert [s.id for s in select(sagas, cluster=None, since=since, limit=10)] == [
        "other",
        "s4",
        "s3",
    ]


def test_an_automatic_failover_leaves_nobody_awaiting_an_operator() -> None:
    failover = fold(
        started("f", kind=SagaKind.FAILOVER, reason="a silent", automatic=True),
        ended("f", T0, ok=True),
    )
    assert not failover.cluster(C).node("a").awaiting_operator
    switchover = fold(started("s", automatic=True), ended("s", T0, ok=True))
    assert switchover.cluster(C).node("a").awaiting_operator
