"""Chaos, fixed faults: a slow disk on the Active, then on the Passive, under the write
workload. Each node's agent and its children run in a blkio cgroup of their own; the fault
throttles that cgroup's writes to the node's data filesystem (a loop-mounted ext4 image) to
``SLOW_DISK`` for a few seconds. The node's processes must be in the cgroup (the agent from
its start) and write through the throttle meanwhile, and every checker holds (no
acknowledged record lost, no split, one Active, no crash or traceback, no event lost). The
figures (ack latency before and during, how far the Passive fell behind) are recorded on the
fault, not asserted: they depend on the machine."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from chaos_fixture import findings, run_topology
from chaos_nemesis import SLOW_DISK, Fault
from chaos_run import ChaosRun

pytestmark = pytest.mark.system


@pytest.fixture
def run(nats_binary: str) -> Iterator[ChaosRun]:
    yield from run_topology()


@pytest.mark.timeout(300)
def test_a_slow_disk_on_the_active_then_the_passive_loses_nothing(run: ChaosRun) -> None:
    if not run.topo.disks.cgroups or not run.topo.disks.devices:
        pytest.skip(f"no loop device or blkio cgroup here: {run.topo.disks.kinds}")
    results, slows = [], []
    for target in ("active", "passive"):
        slow = Fault("slow-disk", target, at_s=0.5, hold_s=4.0)
        results.append(run.scenario(f"slow-disk-{target}", [slow], ready_timeout=60))
        slows.append(slow)
    problems = "\n".join(findings(results))
    for slow in slows:
        d = slow.detail
        assert "not_applied" not in d, d
        assert d["throttle"] == SLOW_DISK, d
        assert slow.pid in d["pids_in_cgroup"], f"the agent runs in its node's cgroup: {d}"
        assert d["cleared"] == sorted(SLOW_DISK), d
        assert d["write_ios_after"] > d["write_ios_before"], f"it wrote through the throttle: {d}"
        assert d["writes"] > 0, f"the workload wrote during the slow disk: {d}"
    assert slows[0].detail["node"] != slows[1].detail["node"], [s.detail for s in slows]
    assert problems == "", problems
