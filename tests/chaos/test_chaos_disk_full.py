"""Chaos, fixed seed: the Passive's disk full under the write workload, then a managed
switchover once it is freed. The Passive's data filesystem (a tmpfs of its own) is filled by a
ballast file beside the protected folder for a few seconds: its replicator pauses apply with
the ``replicator.disk_full`` alert (in the stream), skips nothing, and applies on once the
ballast is deleted; the switchover then completes onto it, and every checker holds (no
acknowledged record lost, no split, one Active, no crash or traceback, no event lost)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator

import pytest
from chaos_fixture import findings, run_topology, saga_states
from chaos_nemesis import Fault
from chaos_run import ChaosRun
from chaos_topology import DISK_LEAVE, NODES

pytestmark = pytest.mark.system
SEED = 15


@pytest.fixture
def run(nats_binary: str) -> Iterator[ChaosRun]:
    yield from run_topology()


def switchover_once_in_sync(node: str, timeout: float = 30) -> Callable[[ChaosRun], list[Fault]]:
    """A managed switchover, once ``node`` (the Passive) says it is in sync again."""

    def during(run: ChaosRun) -> list[Fault]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            nodes = {n["name"]: n for n in (run.topo.view() or {}).get("nodes", [])}
            if nodes.get(node, {}).get("replication") == "in_sync":
                break
            run.topo.supervise()
            time.sleep(0.2)
        switchover = Fault("switchover")
        run.nemesis.apply(switchover)
        return [switchover]

    return during


@pytest.mark.timeout(240)
def test_a_full_disk_on_the_passive_pauses_apply_and_a_switchover_after_completes(
    run: ChaosRun,
) -> None:
    rng = random.Random(SEED)
    view = run.topo.view() or {}
    active = view.get("active")
    assert active in NODES, view
    passive = next(n for n in NODES if n != active)
    fill = Fault("fill-disk", "passive", at_s=0.5, hold_s=round(rng.uniform(3, 5), 1))
    result = run.scenario(
        "disk-full-passive",
        [fill],
        ready_timeout=60,
        saga_timeout=60,
        during=switchover_once_in_sync(passive),
    )
    problems = "\n".join(findings([result]))
    d = fill.detail
    assert d.get("node") == passive, d
    assert d["ballast_bytes"] > 0 and d["free_after"] <= 4 * DISK_LEAVE, f"filled: {d}"
    assert d["free_after_heal"] >= d["ballast_bytes"], f"freed: {d}"
    assert d["writes"] > 0, f"the workload wrote during the full disk: {d}"
    alerts = [
        e
        for e in run.stored
        if e.type == "AlertRaised"
        and e.payload.get("code") == "replicator.disk_full"
        and e.node == passive
    ]
    assert alerts, f"the replicator.disk_full alert of {passive} is in the stream\n{problems}"
    states = saga_states(result)
    assert list(states.values()) == ["completed"], f"the switchover completes: {states}\n{problems}"
    assert (run.topo.view() or {}).get("active") == passive, f"{passive} is Active\n{problems}"
    assert findings([result], "crashes", "tracebacks") == [], problems
    assert findings([result], "lost_acked_records") == [], problems
    assert problems == "", problems
