"""Fencing on the wire: never two nodes answering for the public IP, whatever happens to the
Active's agent. Real agents with the lan identity in network namespaces (hosts a, b and a
client c), a real nats-server and orchestrator in the root namespace. A sampler in c sends an
ARP probe for the public address every 20 ms (each from its own sender IP, so two answers to
one probe are two nodes answering at once) and an HTTP GET loop that records which node
served.

One pair goes through every fault in turn, each starting from a healthy pair:

1. SIGSTOP of the Active agent for 6 s: its guard hides it; the orchestrator fails over;
   the old Active, running again, stays hidden (the record names the other node).
2. SIGKILL of the Active agent, not restarted: its guard hides it at once; failover.
3. A bus partition of the Active (nft drops its traffic to the bus) for 6 s: failover; the
   old Active comes back hidden.
4. SIGKILL of the Active's guard: the agent hides the node, restarts its guard and, as the
   record still names it and no saga moved it, unfences: no failover is needed.

Checked from the client's side only: zero probes answered by both nodes, zero probes answered
by the old Active once the new one had answered (per fault), the client served by the new
Active, the old Active's address gone and its filter in place. Outages are logged (timing
goals are the benchmark's, not asserted here).
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import json
import logging
import os
import signal
from pathlib import Path

import psutil
import pytest

from agent_rig import EventRecorder
from helpers import eventually
from netns_rig import Lan, Tool, addresses, free_subnets, http_body, lan_agent, mac, nft_table, sh
from orchestrator_rig import Pair, both_nodes_ready, cluster_view, leader_ready
from tandem.agent.identity.nftables import table_name_for
from tandem.events.bus import Bus
from tandem.events.embedded import NatsServer
from tandem.events.secure_bus import SecureBusFiles
from tandem.events.settings import BusSettings

pytestmark = pytest.mark.system
log = logging.getLogger(__name__)

CLUSTER = "fence-lan"
TABLE = table_name_for(CLUSTER)
PORT = 8080
HOSTS = {"primary": "a", "secondary": "b"}


class Wire:
    def __init__(self, lan: Lan, pair: Pair, net: ipaddress.IPv4Network, public: str) -> None:
        self.lan, self.pair, self.net, self.public = lan, pair, net, public
        self.url = f"http://{public}:{PORT}/items/whoami"
        self.macs: dict[str, str] = {}
        self.sampler: Tool | None = None
        self.events = EventRecorder()

    def ns(self, node: str) -> str:
        return self.lan.ns(HOSTS[node])

    def start_agent(self, node: str, role: str) -> None:
        peer = "secondary" if node == "primary" else "primary"
        agent = lan_agent(self.pair.tmp, CLUSTER, node, peer=peer, netns=self.ns(node),
                          bus_url=self.pair.bus_url, public=self.public, identity=node,
                          initial_role=role)  # fmt: skip
        self.pair.agents[node] = agent.start()

    async def served_by(self, node: str) -> bool:
        assert self.sampler is not None
        return self.sampler.http()[-3:] == [node] * 3

    async def active(self) -> str | None:
        view = await cluster_view(self.pair)
        return view.get("active")

    async def passive_in_sync(self, active: str) -> bool:
        view = await cluster_view(self.pair)
        return any(n["name"] != active and n["replication"] == "in_sync" for n in view["nodes"])

    async def hidden(self, node: str) -> bool:
        ns = self.ns(node)
        if self.public in await addresses(ns, "eth0"):
            return False
        return (await nft_table(ns, "inet", TABLE)).drops_for(self.public) is not None

    def agent_pid(self, node: str) -> int:
        proc = self.pair.agents[node].proc
        assert proc is not None and proc.poll() is None
        return proc.pid

    def guard_pid(self, node: str) -> int:
        for child in psutil.Process(self.agent_pid(node)).children():
            if "tandem.agent.guard" in " ".join(child.cmdline()):
                return child.pid
        raise AssertionError(f"{node} has no guard process")


def split_probes(sampler: Tool) -> list[int]:
    return sorted(p for p, macs in sampler.replies().items() if len(macs) > 1)


def answers_between(sampler: Tool, start: float, end: float) -> list[tuple[int, str]]:
    """(probe, mac) of every reply to a probe sent in [start, end), in probe order."""
    sent = {line["probe"]: line["t"] for line in sampler.seen("probe")}
    found = []
    for line in sampler.seen("reply"):
        t = sent.get(line["reply"])
        if t is not None and start <= t < end:
            found.append((line["reply"], line["mac"]))
    return sorted(found)


def outage(sampler: Tool, start: float, end: float) -> float:
    """The longest time the client went without an answer between ``start`` and ``end``."""
    answered = [line["t"] for line in sampler.seen("http") if line["http"] is not None]
    times = [start] + [t for t in answered if start <= t <= end] + [end]
    return max(b - a for a, b in itertools.pairwise(times))


async def _fault(wire: Wire, name: str, old: str, new: str, fault, heal=None) -> dict:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    assert wire.sampler is not None
    await eventually(lambda: wire.served_by(old), 60, f"{name}: the client served by {old}")
    # The Passive in sync first: a target still catching up on a journal whose source then
    # dies can hold the next failover's StartIntercepting (a replicator limit of its own).
    try:
        await eventually(lambda: wire.passive_in_sync(old), 120, f"{name}: the Passive in sync")
    except AssertionError as exc:
        # Say what the Passive reported: replication state, lag and the last reason.
        view = await cluster_view(wire.pair)
        raise AssertionError(f"{exc}; nodes: {view['nodes']}") from None
    start = loop.time()
    await fault()
    await eventually(lambda: wire.served_by(new), 60, f"{name}: the client served by {new}")
    if heal is not None:
        await heal()
    await eventually(lambda: wire.hidden(old) if old != new else True, 60, f"{name}: {old} hidden")
    end = loop.time()
    replies = answers_between(wire.sampler, start, end)
    by_mac = [m for _, m in replies]
    late = 0
    if old != new and wire.macs[new] in by_mac:
        first_new = by_mac.index(wire.macs[new])
        late = sum(1 for m in by_mac[first_new:] if m == wire.macs[old])
    result = {
        "scenario": name,
        "probes": len({p for p, _ in replies}),
        "old_after_new": late,
        "outage_s": round(outage(wire.sampler, start, end), 3),
    }
    log.info("fencing scenario %s", result)
    return result


@pytest.mark.timeout(420)
async def test_no_two_nodes_ever_answer_for_the_public_ip(
    lan: Lan,
    tmp_path: Path,
    nats_binary: str,
    bus_secrets: SecureBusFiles,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (net,) = free_subnets(1)
    for n, host in enumerate("abc", 1):
        lan.add_host(host, {"eth0": "chan"}, {"eth0": [f"{net[n]}/24"]})
    bus_ip = str(net[254])
    lan.add_root_leg("chan", f"{bus_ip}/24")
    public = str(net[100])
    nats = NatsServer(
        tmp_path / "nats",
        name="tandem-fence",
        host=bus_ip,
        monitor_port=None,
        extra_config=bus_secrets.server_config(),
    )
    # The suite's certificate names localhost, not this LAN address: clients check that name.
    monkeypatch.setenv("TANDEM_BUS_TLS_SERVER_NAME", "localhost")
    await asyncio.to_thread(nats.start)
    pair = Pair(cluster=CLUSTER, tmp=tmp_path, bus_url=nats.url, public_port=None)
    wire = Wire(lan, pair, net, public)
    bus = await Bus.connect(BusSettings(servers=[nats.url]))
    await wire.events.start(bus, CLUSTER)
    try:
        wire.start_agent("primary", "active")
        wire.start_agent("secondary", "passive")
        pair.add_orchestrator().start()
        await leader_ready(pair)
        await both_nodes_ready(pair)
        for node in HOSTS:
            wire.macs[node] = await mac(wire.ns(node), "eth0")
        c = lan.ns("c")
        await eventually(lambda: http_body(c, wire.url), 60, "the app on the public IP")
        sips = ",".join(str(net[200 + i]) for i in range(40))
        wire.sampler = await lan.start_tool("c", "sample", "--iface", "eth0", "--target", public,
                                            "--sips", sips, "--http", wire.url,
                                            "--interval", "0.02", "--max-s", "400")  # fmt: skip
        results = await _scenarios(wire, bus_ip)
        await wire.sampler.finish()
        split = split_probes(wire.sampler)
        log.info(
            "sampler: %d probes, %d answered by both", len(wire.sampler.seen("probe")), len(split)
        )
        report = os.environ.get("TANDEM_FENCING_REPORT")
        if report:  # bench/fencing_wire.py publishes these figures
            figures = {"probes": len(wire.sampler.seen("probe")), "split_windows": len(split)}
            text = json.dumps({**figures, "scenarios": results}, indent=2)
            await asyncio.to_thread(Path(report).write_text, text)
        assert split == [], f"probes answered by both nodes: {split}"
        for result in results:
            assert result["old_after_new"] == 0, result
    finally:
        if wire.sampler is not None and wire.sampler.proc.returncode is None:
            wire.sampler.proc.kill()
        await wire.events.stop()
        await bus.close()
        await asyncio.to_thread(pair.stop_all)
        await asyncio.to_thread(nats.stop)


async def _scenarios(wire: Wire, bus_ip: str) -> list[dict]:  # type: ignore[type-arg]
    results = []

    # 1. SIGSTOP of the Active agent for 6 s.
    frozen = wire.agent_pid("primary")

    async def freeze() -> None:
        psutil.Process(frozen).send_signal(signal.SIGSTOP)
        await asyncio.sleep(6)
        psutil.Process(frozen).send_signal(signal.SIGCONT)

    results.append(await _fault(wire, "sigstop-6s", "primary", "secondary", freeze))
    await both_nodes_ready(wire.pair)
    assert await wire.active() == "secondary"

    # 2. SIGKILL of the Active agent, not restarted (until the client is served elsewhere).
    async def kill_agent() -> None:
        psutil.Process(wire.agent_pid("secondary")).kill()

    results.append(await _fault(wire, "sigkill-agent", "secondary", "primary", kill_agent))
    assert await wire.hidden("secondary")
    wire.start_agent("secondary", "passive")
    await both_nodes_ready(wire.pair)

    # 3. A bus partition of the Active for 6 s.
    rules = (
        "add table inet partition; "
        "add chain inet partition o { type filter hook output priority 0; }; "
        "add chain inet partition i { type filter hook input priority 0; }; "
        f"add rule inet partition o ip daddr {bus_ip} drop; "
        f"add rule inet partition i ip saddr {bus_ip} drop"
    )
    ns_a = wire.ns("primary")

    async def partition() -> None:
        sh("ip", "netns", "exec", ns_a, "nft", rules)

    async def heal() -> None:
        await asyncio.sleep(6)
        sh("ip", "netns", "exec", ns_a, "nft", "delete", "table", "inet", "partition")

    results.append(await _fault(wire, "bus-partition-6s", "primary", "secondary", partition, heal))
    await both_nodes_ready(wire.pair)
    assert await wire.active() == "secondary"

    # 4. SIGKILL of the Active's guard: the agent hides, restarts its guard and unfences.
    async def kill_guard() -> None:
        psutil.Process(wire.guard_pid("secondary")).kill()
        await eventually(lambda: wire.events.of("NodeUnfenced"), 60, "secondary unfences")
        fenced = wire.events.of("NodeSelfFenced")[-1]
        assert fenced.node == "secondary" and "guard is gone" in fenced.payload.reason  # type: ignore[attr-defined]

    results.append(await _fault(wire, "sigkill-guard", "secondary", "secondary", kill_guard))
    assert await wire.active() == "secondary"
    wire.guard_pid("secondary")  # a new guard runs
    return results
