"""Chaos on the wire: a 6 s bus partition of the Active (nftables in its network namespace
drops everything to and from the three NATS servers). Real agents in namespaces with the lan
identity, the 3-node NATS cluster and two orchestrators in the root namespace, the demo app
under a write load through the public IP. The partitioned agent survives (no exit, no
traceback), fences itself (``NodeSelfFenced``), and rejoins as a serving pair's Passive once
the partition heals; every other checker holds."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
from chaos_fixture import findings, run_topology
from chaos_nemesis import Fault
from chaos_netns import NetnsTopology
from chaos_run import ChaosRun

from conftest import has_binary, require
from netns_rig import Lan, free_subnets

pytestmark = pytest.mark.system


@pytest.fixture
def run(nats_binary: str) -> Iterator[ChaosRun]:
    require("root", os.geteuid() == 0, "network namespaces and nftables need root")
    for binary, package in (("ip", "iproute2"), ("nft", "nftables")):
        require(binary, has_binary(binary), f"install {package}")
    lan = Lan()
    try:
        try:
            lan.create("chan")
        except RuntimeError as exc:
            require("network namespaces", False, str(exc))
        (net,) = free_subnets(1)
        topo = NetnsTopology(lan, net, keep=os.environ.get("TANDEM_CHAOS_KEEP") == "1")
        yield from run_topology(topo)
    finally:
        lan.destroy()


@pytest.mark.timeout(300)
def test_a_partitioned_active_survives_fences_and_rejoins(run: ChaosRun) -> None:
    view = run.topo.view() or {}
    active = view.get("active")
    assert active in ("primary", "secondary"), view
    result = run.scenario(
        "partition-6s", [Fault("partition", "active", at_s=0, hold_s=6)], ready_timeout=90
    )
    problems = "\n".join(findings([result]))
    agent = f"agent-{active}"
    assert findings([result], "crashes", "tracebacks") == [], f"{agent} survives:\n{problems}"
    assert run.topo.agents[active].running(), f"{agent} is not running:\n{problems}"
    # The node records its fence through its outbox once the bus is back: give that
    # delivery time (a loaded machine), then read it from the stream.
    assert run.watch is not None
    deadline = time.monotonic() + 60
    fenced = []
    while not fenced and time.monotonic() < deadline:
        fenced = [e for e in run.watch.stored() if e.type == "NodeSelfFenced" and e.node == active]
        if not fenced:
            time.sleep(1)
    assert fenced, f"{active} fenced itself (NodeSelfFenced in the stream)\n{problems}"
    assert result["ready"], f"{active} rejoins: {result['not_ready_because']}\n{problems}"
    nodes = {n["name"]: n for n in (run.topo.view() or {}).get("nodes", [])}
    assert nodes[active]["alive"], nodes
    assert problems == "", problems


@pytest.fixture
def loopback_run() -> Iterator[ChaosRun]:
    require("root", os.geteuid() == 0, "a cgroup and an nftables rule of its own need root")
    require("nft", has_binary("nft"), "install nftables")
    yield from run_topology()


@pytest.mark.timeout(300)
def test_an_active_cut_from_the_bus_fences_itself_before_the_passive_serves(
    loopback_run: ChaosRun,
) -> None:
    """The loopback topology's partition (``chaos_bus_cut``): the Active's agent and app lose
    every NATS server for 8 s while the app keeps its port. The split checker samples the
    public port and both apps throughout: never two serving. The cut node fences itself,
    survives, and the pair is serving again with it once healed."""
    run = loopback_run
    active = (run.topo.view() or {}).get("active")
    assert active in ("primary", "secondary")
    fault = Fault("partition", "active", at_s=0, hold_s=8)
    result = run.scenario("cut-8s", [fault], ready_timeout=120)
    if "not_applied" in fault.detail:
        pytest.skip(f"no bus partition here: {fault.detail['not_applied']}")
    assert fault.detail.get("pids_in_cgroup"), f"the cut reached no process: {fault.detail}"
    problems = "\n".join(findings([result]))
    assert findings([result], "split") == [], problems
    assert run.watch is not None
    deadline = time.monotonic() + 60
    fenced = []
    while not fenced and time.monotonic() < deadline:
        fenced = [e for e in run.watch.stored() if e.type == "NodeSelfFenced" and e.node == active]
        if not fenced:
            time.sleep(1)
    assert fenced, f"{active} fenced itself (NodeSelfFenced in the stream)\n{problems}"
    assert result["ready"], f"the pair serves again: {result['not_ready_because']}\n{problems}"
    assert problems == "", problems
