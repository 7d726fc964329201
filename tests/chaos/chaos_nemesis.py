"""The nemesis: real faults on the real topology, from a seeded schedule (``random.Random``).

Faults: SIGKILL or SIGSTOP (SIGCONT after ``hold_s``) of an agent (the Active's or the
Passive's), of an orchestrator (the leader or the follower), of a NATS server, of the
``TANDEM_EVENTS`` stream leader (found by ``stream_info().cluster.leader``); a managed
switchover (POST to the leading orchestrator's API) during the other faults. A killed process
stays down for ``hold_s`` and is then restarted, as a supervisor would. ``fill-disk``: a
ballast file beside a node's protected folder fills the node's data filesystem (an ext4
image of its own, loop-mounted: ``chaos_disks``) but for a few KiB, for ``hold_s``, then is
deleted; "passive" is the node that is Passive when it is applied (its replicator pauses apply
with the ``replicator.disk_full`` alert and resumes after), "active" the Active (its app's
writes fail and are not acknowledged). ``slow-disk``: the node's blkio cgroup (its agent and
the agent's children: the app, the replica apply) is throttled on that loop device to
``SLOW_DISK`` (10 write IOs/s, 256 KiB/s written) for ``hold_s``, then the limits are cleared;
on the Active every acknowledged write waits for its fsyncs (the workload's ack latency
grows), on the Passive the replica apply falls behind. Where a disk fault cannot be applied
(no filesystem, loop device or blkio controller of its own) the fault says why in
``detail["not_applied"]``. ``partition``: the node's agent and app are cut from every NATS
server for ``hold_s`` (nft on the node's cgroup: ``chaos_bus_cut``; in the network-namespace
topology, ``chaos_netns``, its namespace); the app keeps serving its port, so an Active cut
off must fence itself before the Passive takes over.

A schedule is data (``Fault`` list, JSON-able): the same seed gives the same schedule; which
concrete process a role names ("the Active's agent") is resolved when the fault is applied
and recorded on the fault.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from chaos_bus_cut import CutUnavailable
from chaos_disks import DiskUnavailable
from chaos_topology import NODES, NatsNode, Topology

log = logging.getLogger(__name__)

#: kind -> the group of parts it hits (one fault per group per scenario: two NATS servers down
#: at once is a loss of quorum, a different experiment).
KINDS = {
    "kill-agent": "agent",
    "stop-agent": "agent",
    "partition": "agent",
    "kill-orchestrator": "orchestrator",
    "stop-orchestrator": "orchestrator",
    "kill-nats": "nats",
    "stop-nats": "nats",
    "kill-stream-leader": "nats",
    "fill-disk": "disk",
    "slow-disk": "disk",
}
#: The disk group is drawn apart, in this share of the scenarios (a full disk is rarer than a
#: dead process, and the other groups keep the draw they had before it existed).
DISK_CHANCE = 0.2
#: Of the disk faults drawn, the share that are a slow disk rather than a full one.
SLOW_DISK_SHARE = 0.5
#: What a slow disk allows its node's processes (``chaos_disks.NodeDisks.slow``): a record is a
#: data block and a directory fsync, the apply of a batch a few fsyncs: about 10 a second.
SLOW_DISK = {"write_iops": 10, "write_bps": 256 * 1024}


@dataclass
class Fault:
    kind: str
    #: "active" / "passive" (agents), "leader" / "follower" (orchestrators), "0".."2" (NATS).
    target: str = ""
    #: Seconds after the scenario's start.
    at_s: float = 0.0
    hold_s: float = 0.0
    # Filled in when applied:
    started: float | None = None
    ended: float | None = None
    process: str | None = None
    pid: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def schedule(rng: random.Random, max_faults: int = 3) -> list[Fault]:
    """One scenario's faults: 1..max_faults of distinct groups (a full or slow disk in
    ``DISK_CHANCE`` of them), maybe with a switchover."""
    faults: list[Fault] = []
    switchover = rng.random() < 0.5
    if switchover:
        faults.append(Fault("switchover", at_s=0.0))
    drawn = sorted(set(KINDS.values()) - {"disk"})
    groups = rng.sample(drawn, rng.randint(1, min(max_faults, 3)))
    if rng.random() < DISK_CHANCE:  # within max_faults: it takes the last one's place
        groups = [*groups[: max(0, max_faults - 1)], "disk"]
    for group in groups:
        if group == "disk":
            # Drawn as when fill-disk was its only kind (every other draw stays as it was);
            # slow or full from a generator seeded by the state here (the same every time).
            rng.choice(["fill-disk"])
            slow = random.Random(repr(rng.getstate())).random() < SLOW_DISK_SHARE
            kind = "slow-disk" if slow else "fill-disk"
        else:
            kind = rng.choice(sorted(k for k, g in KINDS.items() if g == group))
        target = {
            "agent": rng.choice(["active", "passive"]),
            "disk": rng.choice(["active", "passive"]),
            "orchestrator": rng.choice(["leader", "follower"]),
            "nats": str(rng.randrange(3)),
        }[group]
        at = round(rng.uniform(0.3, 2.5) if switchover else rng.uniform(0.0, 1.5), 2)
        hold = round(rng.uniform(2.0, 6.0), 1)
        faults.append(Fault(kind, target if kind != "kill-stream-leader" else "", at, hold))
    return sorted(faults, key=lambda f: f.at_s)


class Nemesis:
    """Applies a schedule; ``run`` returns when every fault has been healed."""

    def __init__(self, topo: Topology) -> None:
        self.topo = topo
        self.sagas: list[str] = []

    def _agent(self, which: str) -> str:
        view = self.topo.view() or {}
        active = view.get("active") or NODES[0]
        return active if which == "active" else next(n for n in NODES if n != active)

    def _orchestrator(self, which: str) -> int:
        leader = self.topo.leader()
        leader = 0 if leader is None else leader
        return leader if which == "leader" else 1 - leader

    def _nats(self, fault: Fault) -> NatsNode:
        if fault.kind == "kill-stream-leader":
            watch = getattr(self.topo, "watch", None)
            name = watch.stream_leader() if watch is not None else None
            fault.detail["stream_leader"] = name
            found = [n for n in self.topo.nats if n.name == name]
            if found:
                return found[0]
            log.warning("stream leader %r not found among the servers: the first one", name)
            return self.topo.nats[0]
        return self.topo.nats[int(fault.target or 0)]

    def apply(self, fault: Fault) -> Callable[[], None] | None:
        """Inject ``fault``; the heal (SIGCONT, or let the supervisor restart) or None."""
        fault.started = time.time()
        if fault.kind == "switchover":
            status, body = self.topo.switchover("chaos: managed switchover under faults")
            fault.detail.update(status=status, answer=body)
            if status == 202 and "saga_id" in body:
                self.sagas.append(body["saga_id"])
            fault.ended = time.time()
            return None
        part: Any
        if fault.kind == "partition":
            return self._partition(fault)
        if fault.kind == "fill-disk":
            return self._fill_disk(fault)
        if fault.kind == "slow-disk":
            return self._slow_disk(fault)
        if fault.kind.endswith("-agent"):
            node = self._agent(fault.target)
            part = self.topo.agents[node]
            fault.detail["node"] = node
        elif fault.kind.endswith("-orchestrator"):
            part = self.topo.orchestrators[self._orchestrator(fault.target)]
        else:
            part = self._nats(fault)
        fault.process, fault.pid = part.name, part.pid
        log.info("nemesis: %s %s (pid %s) for %.1fs", fault.kind, part.name, part.pid, fault.hold_s)
        if fault.kind.startswith("stop-"):
            part.pause()

            def cont() -> None:
                part.resume()
                fault.ended = time.time()

            return cont
        part.held = True
        part.kill()

        def release() -> None:
            part.held = False
            self.topo.supervise()
            fault.ended = time.time()

        return release

    def _partition(self, fault: Fault) -> Callable[[], None]:
        """The node's agent and app cut from the bus (nft on its cgroup, or its network
        namespace in ``chaos_netns``); the app keeps its public port."""
        node = self._agent(fault.target)
        proc = self.topo.agents.get(node) if hasattr(self.topo, "agents") else None
        fault.process, fault.detail["node"] = f"agent-{node}", node
        fault.pid = proc.pid if proc is not None else None
        fault.detail["active_then"] = (self.topo.view() or {}).get("active")
        log.info("nemesis: bus partition of %s (%s) for %.1fs", node, fault.target, fault.hold_s)
        applied = True
        try:
            found = self.topo.partition(node)  # type: ignore[attr-defined]
        except CutUnavailable as exc:
            log.warning("nemesis: partition of %s not applied: %s", node, exc)
            fault.detail["not_applied"] = str(exc)
            applied = False
        else:
            fault.detail.update(found or {})

        def heal() -> None:
            if applied:
                self.topo.heal(node)  # type: ignore[attr-defined]
            fault.ended = time.time()

        return heal

    def _fill_disk(self, fault: Fault) -> Callable[[], None]:
        node = self._agent(fault.target)
        proc = self.topo.agents[node]
        fault.process, fault.pid = proc.name, proc.pid
        # Who the view named Active then (mid-switchover the view moves before the nodes do).
        fault.detail["active_then"] = (self.topo.view() or {}).get("active")
        log.info("nemesis: fill-disk of %s (%s) for %.1fs", node, fault.target, fault.hold_s)
        try:
            fault.detail.update(self.topo.fill_disk(node))
        except DiskUnavailable as exc:  # no filesystem of its own (not root): nothing to fill
            log.warning("nemesis: fill-disk of %s not applied: %s", node, exc)
            fault.detail.update(node=node, not_applied=str(exc))

        def free() -> None:
            fault.detail["free_after_heal"] = self.topo.free_disk(node)
            fault.ended = time.time()

        return free

    def _slow_disk(self, fault: Fault) -> Callable[[], None]:
        node = self._agent(fault.target)
        proc = self.topo.agents[node]
        fault.process, fault.pid = proc.name, proc.pid
        fault.detail["active_then"] = (self.topo.view() or {}).get("active")
        log.info("nemesis: slow-disk of %s (%s) for %.1fs", node, fault.target, fault.hold_s)
        why = ""
        try:
            fault.detail.update(self.topo.slow_disk(node, **SLOW_DISK))
        except DiskUnavailable as exc:
            why = str(exc)
        else:
            # A running agent outside the cgroup (its shell could not join it) is not slowed;
            # a killed one is, once restarted (it joins at its start).
            if proc.running() and proc.pid not in fault.detail.get("pids_in_cgroup", []):
                why = f"the agent (pid {proc.pid}) is not in {node}'s blkio cgroup"
                self.topo.unslow_disk(node)
        if why:
            log.warning("nemesis: slow-disk of %s not applied: %s", node, why)
            fault.detail.update(node=node, not_applied=why)
        if fault.pid is None:
            fault.detail["agent_down_then"] = True
        fault.detail["behind_before"] = self._behind()

        def heal() -> None:
            # How far the Passive is behind the Active at the slow disk's worst (its end).
            fault.detail["behind_at_heal"] = self._behind()
            if not why:
                fault.detail.update(self.topo.unslow_disk(node))
            fault.ended = time.time()

        return heal

    def _behind(self) -> dict[str, Any]:
        """The records the Active's folder holds that the Passive's does not (a count of
        ``rec-*`` files each), and the Passive's lag as the orchestrator's view says."""
        view = self.topo.view() or {}
        active = view.get("active")
        if active not in NODES:
            return {}
        passive = next(n for n in NODES if n != active)
        counts = {n: _records(self.topo.data_dir(n)) for n in (active, passive)}
        lag = next((n for n in view.get("nodes", []) if n.get("name") == passive), {})
        return {
            "passive": passive,
            "records_behind": counts[active] - counts[passive],
            "lag_batches": lag.get("lag_batches"),
            "lag_bytes": lag.get("lag_bytes"),
        }

    def run(self, faults: list[Fault], tick: Callable[[], object]) -> None:
        """Apply every fault at its offset and heal it ``hold_s`` later; ``tick`` (the
        supervisor) runs in between."""
        start = time.monotonic()
        pending = sorted(faults, key=lambda f: f.at_s)
        heals: list[tuple[float, Callable[[], None]]] = []
        while pending or heals:
            now = time.monotonic() - start
            while pending and pending[0].at_s <= now:
                fault = pending.pop(0)
                heal = self.apply(fault)
                if heal is not None:
                    heals.append((time.monotonic() - start + fault.hold_s, heal))
            for due, heal in [h for h in heals if h[0] <= time.monotonic() - start]:
                heal()
                heals.remove((due, heal))
            tick()
            time.sleep(0.1)


def _records(folder: Path) -> int:
    """How many of the workload's records (``rec-*`` files) ``folder`` holds."""
    try:
        with os.scandir(folder) as entries:
            return sum(1 for e in entries if e.name.startswith("rec-"))
    except OSError:
        return 0
