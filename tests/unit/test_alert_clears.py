"""Every alert code clears when its condition ends (issue 19's audit), for the codes whose
condition lives in one component: a rule's alert once its check passes the rule again (the
monitor's rule engine and action runner), a target's ``replicator.disk_full`` once a batch
applies again or the target side ends (the replicator's apply loop on a real receive queue
and applier). The spill quota's is in test_sendqueue; the orchestrator's in
test_alert_fold, test_history and the integration test of the alert endpoints."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from tandem.events.catalog import AlertCleared, AlertRaised, RuleBreached
from tandem.events.catalog.vocabulary import HealthStatus, ReplicaState, Role
from tandem.events.envelope import Event
from tandem.events.nodeboard import NodeBoard
from tandem.monitor.actions import ActionRunner
from tandem.monitor.health.base import Sample
from tandem.monitor.rules import RuleConfig, RuleEngine
from tandem.replicator.apply import BatchApplier
from tandem.replicator.applyloop import DISK_FULL, ApplyLoop
from tandem.replicator.batch import Batch
from tandem.replicator.ops import Op, OpKind
from tandem.replicator.receivequeue import ReceiveQueue

UP = Sample(status=HealthStatus.OK, metrics={"up": 1.0}, message="listening")
DOWN = Sample(status=HealthStatus.CRITICAL, metrics={"up": 0.0}, message="connection refused")


async def test_a_rules_alert_clears_once_its_check_passes_it_again() -> None:
    rule = RuleConfig.model_validate(
        {"name": "web-down", "check": "web", "metric": "up", "comparator": "==", "threshold": 0,
         "consecutive": 2, "actions": [{"do": "alert", "severity": "warning"}]}
    )  # fmt: skip
    engine = RuleEngine([rule])
    events: list[Event] = []
    board = NodeBoard(role=Role.ACTIVE, epoch=3)
    actions = ActionRunner("c1", "n1", board, events.append, None, {}, None)

    async def observe(sample: Sample, now: float) -> None:  # what HealthLoop.observe does
        for decision in engine.observe("web", sample, now):
            await actions.carry_out(decision)
        actions.recovered(engine.passing("web"), "web", sample.message)

    await observe(UP, 0)
    assert events == []  # passing, and nothing raised: nothing to clear
    await observe(DOWN, 1)
    await observe(DOWN, 2)
    assert [type(e) for e in events] == [RuleBreached, AlertRaised]
    await observe(DOWN, 3)
    assert len(events) == 2  # still breaching: the alert stays
    await observe(UP, 4)
    [cleared] = events[2:]
    assert isinstance(cleared, AlertCleared) and cleared.payload.code == "rule.web-down"
    assert cleared.fingerprint == events[1].fingerprint  # type: ignore[attr-defined]
    assert "check web passes it again (listening)" in cleared.payload.reason
    await observe(UP, 5)
    assert len(events) == 3  # cleared once


@pytest.fixture
def target(tmp_path: Path) -> tuple[ReceiveQueue, BatchApplier]:
    (tmp_path / "root").mkdir()
    return ReceiveQueue(tmp_path / "rq"), BatchApplier(tmp_path / "root", tmp_path / "apply")


async def test_disk_full_clears_once_a_batch_applies_again(
    target: tuple[ReceiveQueue, BatchApplier], monkeypatch: pytest.MonkeyPatch
) -> None:
    queue, applier = target
    raised: list[str] = []
    cleared: list[str] = []
    states: list[ReplicaState] = []

    async def report(state: ReplicaState, reason: str) -> None:
        states.append(state)

    async def alert(code: str, reason: str) -> None:
        raised.append(code)

    async def clear(code: str, reason: str) -> None:
        cleared.append(f"{code}: {reason}")

    loop = ApplyLoop(queue, applier, report_state=report, raise_alert=alert, clear_alert=clear)
    batch = Batch(1, 1, 0, (Op(OpKind.WRITE, "a", data=b"1"),))
    queue.put(1, 1, b"", {}, decoded=batch)
    real = applier.apply
    full = [True]

    def apply(b: Batch) -> int:
        if full.pop() if full else False:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(b)

    monkeypatch.setattr(applier, "apply", apply)
    await loop.cycle()
    assert raised == [DISK_FULL] and states == [ReplicaState.PAUSED] and cleared == []
    await loop.cycle()
    assert states[-1] is ReplicaState.IN_SYNC
    assert cleared == [f"{DISK_FULL}: batch 1:1 applied: the disk has room"]
    await loop.disk_alert_ended("the target side ended")
    assert len(cleared) == 1  # once


async def test_disk_full_clears_when_the_target_side_ends(
    target: tuple[ReceiveQueue, BatchApplier], monkeypatch: pytest.MonkeyPatch
) -> None:
    queue, applier = target
    cleared: list[str] = []

    async def nothing(*_: object) -> None:
        return None

    async def clear(code: str, reason: str) -> None:
        cleared.append(reason)

    loop = ApplyLoop(queue, applier, report_state=nothing, raise_alert=nothing, clear_alert=clear)
    queue.put(1, 1, b"", {}, decoded=Batch(1, 1, 0, (Op(OpKind.WRITE, "a", data=b"1"),)))

    def full(b: Batch) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(applier, "apply", full)
    await loop.cycle()
    await loop.disk_alert_ended("the target side of n2 ended")
    assert cleared == ["the target side of n2 ended"]


async def test_a_rules_alert_open_at_a_restart_is_cleared_by_the_next_run(tmp_path: Path) -> None:
    rule = RuleConfig.model_validate(
        {"name": "web-down", "check": "web", "metric": "up", "comparator": "==", "threshold": 0,
         "consecutive": 1, "actions": [{"do": "alert"}]}
    )  # fmt: skip
    board = NodeBoard(role=Role.ACTIVE, epoch=3)
    events: list[Event] = []
    first = ActionRunner("c1", "n1", board, events.append, None, {}, None, tmp_path / "monitor")
    [decision] = RuleEngine([rule]).observe("web", DOWN, 0)
    await first.carry_out(decision)
    assert isinstance(events[-1], AlertRaised)

    # The agent restarts: a new engine and runner over the same state folder.
    engine = RuleEngine([rule])
    again = ActionRunner("c1", "n1", board, events.append, None, {}, None, tmp_path / "monitor")
    assert engine.observe("web", UP, 10) == []
    again.recovered(engine.passing("web"), "web", UP.message)
    assert isinstance(events[-1], AlertCleared) and events[-1].payload.code == "rule.web-down"
    third = ActionRunner("c1", "n1", board, events.append, None, {}, None, tmp_path / "monitor")
    third.recovered(["web-down"], "web", "")
    assert len(events) == 3  # cleared, and so forgotten on disk too
