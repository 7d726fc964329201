"""Chaos, fixed seed: the leading orchestrator and a NATS server SIGKILLed together in the
middle of a managed switchover, on the real topology (3-node NATS cluster with R3 streams, two
orchestrators, a pair of agents with the demo app under a write load). Both stay down until the
saga has ended: the other orchestrator takes the lead and completes the saga; no process
crashes, no event is lost, and every other checker holds."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from chaos_fixture import findings, run_topology, saga_states
from chaos_nemesis import Fault
from chaos_run import ChaosRun, mid_saga

pytestmark = pytest.mark.system
SEED = 1515


@pytest.fixture
def run(nats_binary: str) -> Iterator[ChaosRun]:
    yield from run_topology()


@pytest.mark.timeout(300)
def test_the_other_orchestrator_completes_the_saga(run: ChaosRun) -> None:
    rng = random.Random(SEED)
    faults = [Fault("kill-orchestrator", "leader"), Fault("kill-nats", str(rng.randrange(3)))]
    result = run.scenario(
        "orchestrator+nats",
        [],
        ready_timeout=60,
        saga_timeout=90,
        during=mid_saga(faults, step=rng.randint(1, 3), until_saga_end=True),
    )
    problems = "\n".join(findings([result]))
    states = saga_states(result)
    assert len(states) == 1 and next(iter(states.values())) == "completed", (
        f"the switchover completes: {states}\n{problems}"
    )
    (saga_id,) = states
    killed = faults[0].process
    assert run.watch is not None
    ends = [
        e
        for e in run.watch.seen
        if e.type == "SagaCompleted" and e.payload.get("saga_id") == saga_id
    ]
    assert ends and all(e.node != killed for e in ends), (
        f"completed by the other orchestrator, not {killed}: {[e.node for e in ends]}"
    )
    assert findings([result], "crashes", "tracebacks") == [], problems
    assert findings([result], "lost_events") == [], problems
    assert problems == "", problems
