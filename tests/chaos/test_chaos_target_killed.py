"""Chaos, fixed seed: the agent of the node a managed switchover moves to falls behind (frozen
for a second while the old Active goes on writing), is SIGKILLed while the old Active stops
and drains, and is restarted a few seconds later (as its supervisor would), twice, on the
real topology (3-node NATS cluster with R3 streams, two orchestrators,
a pair of agents with the demo app under a write load). The pivot can happen while it is
down: back up, it must apply the journal the old Active drained before it serves. Each
round: the switchover completes, no acknowledged record is missing on the new Active, never
two nodes serve, and every other checker holds."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from chaos_fixture import findings, run_topology, saga_states
from chaos_nemesis import Fault
from chaos_run import ChaosRun, mid_saga

pytestmark = pytest.mark.system


@pytest.fixture
def run(nats_binary: str) -> Iterator[ChaosRun]:
    yield from run_topology()


def behind_then_killed(step: int) -> Callable[[ChaosRun], list[Fault]]:
    def during(run: ChaosRun) -> list[Fault]:
        freeze = Fault("stop-agent", "passive")
        thaw = run.nemesis.apply(freeze)  # the journal grows, unapplied by the target
        time.sleep(1.0)
        faults = mid_saga([Fault("kill-agent", "passive", hold_s=5.0)], step)(run)
        if thaw is not None:
            thaw()  # the kill woke and ended it; this only closes the fault's record
        return [freeze, *faults]

    return during


@pytest.mark.timeout(360)
def test_the_switchovers_target_killed_mid_saga_loses_no_acknowledged_write(
    run: ChaosRun,
) -> None:
    results = []
    for i, step in enumerate((0, 1)):  # while the old Active stops its apps / drains
        results.append(
            run.scenario(
                f"round-{i + 1}",
                [],
                ready_timeout=90,
                saga_timeout=120,
                during=behind_then_killed(step),
            )
        )
    problems = "\n".join(findings(results))
    states = [saga_states(r) for r in results]
    assert all(len(s) == 1 and next(iter(s.values())) == "completed" for s in states), (
        f"every switchover completes: {states}\n{problems}"
    )
    assert findings(results, "lost_acked_records") == [], problems
    assert findings(results, "split") == [], problems
    assert problems == "", problems
