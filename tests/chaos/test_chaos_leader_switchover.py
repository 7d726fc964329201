"""Chaos, fixed seed: the ``TANDEM_EVENTS`` stream leader SIGKILLed in the middle of a managed
switchover, three rounds on one real topology (3-node NATS cluster with R3 streams, two
orchestrators, a pair of agents with the demo app under a write load). Each round: the saga
completes, no process crashes or logs a traceback, no event a live subscriber saw is missing
from the stream, and every other checker holds (one Active, no split, no acknowledged record
lost)."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from chaos_fixture import findings, run_topology, saga_states
from chaos_nemesis import Fault
from chaos_run import ChaosRun, mid_saga

pytestmark = pytest.mark.system
SEED = 15


@pytest.fixture
def run(nats_binary: str) -> Iterator[ChaosRun]:
    yield from run_topology()


@pytest.mark.timeout(420)
def test_the_stream_leader_killed_mid_switchover_three_times(run: ChaosRun) -> None:
    rng = random.Random(SEED)
    results = []
    for i in range(3):
        step = rng.randint(0, 3)  # which step of the switchover has started when it dies
        kill = Fault("kill-stream-leader", hold_s=round(rng.uniform(2, 4), 1))
        results.append(
            run.scenario(
                f"round-{i + 1}",
                [],
                ready_timeout=60,
                saga_timeout=60,
                during=mid_saga([kill], step),
            )
        )
    states = [saga_states(r) for r in results]
    problems = findings(results)
    assert all(len(s) == 1 and next(iter(s.values())) == "completed" for s in states), (
        f"every round's switchover completes: {states}\n" + "\n".join(problems)
    )
    assert findings(results, "crashes", "tracebacks") == [], "\n".join(problems)
    assert findings(results, "lost_events") == [], "\n".join(problems)
    assert problems == [], "\n".join(problems)
