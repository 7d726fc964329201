"""The LAN identity (``LinuxLanIdentity``) in real network namespaces: nodes A and B and a
client C on a bridge (see ``netns_rig``), the identity's calls run inside each node's namespace.

Identity level: expose/hide/status/reset_on_start and their idempotency, C reaching whichever
node holds the public address, the hidden filter really dropping (nft counters) without
touching the channel address, single and dual NIC, IPv6. End to end: real agents with the demo
app and the orchestrator; an ARP sampler in C never sees A and B answer the same probe during a
switchover, and a restarted agent comes up hidden.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from helpers import eventually
from netns_rig import (
    TOOLS,
    Lan,
    Tool,
    addresses,
    free_subnets,
    http_body,
    lan_agent,
    mac,
    nft_table,
    sh,
)
from netns_rig import tool as run_tool
from orchestrator_rig import Pair, both_nodes_ready, leader_ready, wait_saga
from tandem.agent.identity.nftables import table_name_for
from tandem.events.embedded import NatsServer
from tandem.events.secure_bus import SecureBusFiles

pytestmark = pytest.mark.system
log = logging.getLogger(__name__)

TABLE = table_name_for("lan-test")
PORT = 8080


@dataclass
class Site:
    """Hosts a, b (nodes) and c (client); ``ip`` are their channel addresses."""

    lan: Lan
    ip: dict[str, str]
    public: str
    interface: str = "eth0"
    channel: str | None = None
    prefix: int | None = None
    sips: str = ""
    servers: dict[str, Tool] = field(default_factory=dict)

    def ns(self, host: str) -> str:
        return self.lan.ns(host)

    async def identity(self, host: str, op: str, **override: str) -> dict[str, Any]:
        """``LinuxLanIdentity.<op>()`` run in ``host``'s namespace (a fresh instance each time,
        as a restarted agent would build)."""
        if host not in self.servers:
            self.servers[host] = await self.lan.start_tool(host, "identity-server")
        request: dict[str, Any] = {"op": op, "address": self.public, "interface": self.interface}
        request |= {"table": TABLE, "channel": self.channel, "prefix": self.prefix, **override}
        return await self.servers[host].ask(request)

    def serve(self) -> None:
        for host in "ab":
            self.lan.spawn(host, sys.executable, str(TOOLS), "serve", "--port", str(PORT),
                           "--name", host.upper())  # fmt: skip

    def url(self, address: str | None = None) -> str:
        host = address or self.public
        return f"http://[{host}]:{PORT}/" if ":" in host else f"http://{host}:{PORT}/"

    async def client_reaches(self, name: str, timeout: float = 30) -> None:
        async def answered() -> bool:
            return await http_body(self.ns("c"), self.url()) == name

        await eventually(answered, timeout, f"C to reach {name} on {self.public}")


def single_nic(lan: Lan, *, ipv6: bool = False) -> Site:
    (net,) = free_subnets(1)
    v6 = f"fd{secrets.token_hex(1)}:{secrets.token_hex(2)}:{secrets.token_hex(2)}::"
    ip = {}
    for n, host in enumerate("abc", 1):
        cidrs = [f"{net[n]}/24"] + ([f"{v6}{n}/64"] if ipv6 else [])
        lan.add_host(host, {"eth0": "chan"}, {"eth0": cidrs})
        ip[host] = str(net[n])
    public = f"{v6}100" if ipv6 else str(net[100])
    sips = ",".join(str(net[200 + i]) for i in range(40))
    return Site(lan, ip, public, sips=sips)


async def test_expose_hide_and_switch_on_one_nic(lan: Lan) -> None:
    site = single_nic(lan)
    site.serve()
    for host in "ab":
        reset = await site.identity(host, "reset")
        assert reset["exposed"] is False and reset["detail"].startswith("hidden at start"), reset

    first = await site.identity("a", "expose")
    assert first["exposed"] and first["address"] == site.public, first
    assert "announcing by gratuitous ARP" in first["detail"]
    again = await site.identity("a", "expose")
    assert again["exposed"] and again["detail"].startswith("already exposed"), again
    status = await site.identity("a", "status")
    assert (status["exposed"], status["address"]) == (True, site.public)
    assert site.public in await addresses(site.ns("a"), "eth0")
    assert not (await nft_table(site.ns("a"), "inet", TABLE)).present
    assert not (await nft_table(site.ns("a"), "arp", TABLE)).present
    await site.client_reaches("A")

    hidden = await site.identity("a", "hide")
    assert hidden["exposed"] is False and "removed from eth0" in hidden["detail"], hidden
    again = await site.identity("a", "hide")
    assert again["exposed"] is False and again["detail"].startswith("already hidden"), again
    assert (await site.identity("b", "expose"))["exposed"]
    await site.client_reaches("B")

    status_a = await site.identity("a", "status")
    status_b = await site.identity("b", "status")
    assert (status_a["exposed"], status_a["address"]) == (False, None), status_a
    assert (status_b["exposed"], status_b["address"]) == (True, site.public), status_b
    a_addresses = await addresses(site.ns("a"), "eth0")
    assert site.public not in a_addresses and site.ip["a"] in a_addresses
    for family in ("inet", "arp"):
        table = await nft_table(site.ns("a"), family, TABLE)
        assert table.drops_for(site.public) is not None, (family, table)
        assert table.drops_for(site.ip["a"]) is None  # the channel address is never filtered


async def test_the_hidden_filter_drops_the_public_address_and_spares_the_channel(
    lan: Lan,
) -> None:
    site = single_nic(lan)
    site.serve()
    a, c = site.ns("a"), site.ns("c")
    await site.identity("a", "reset")
    await site.identity("b", "reset")
    assert (await site.identity("b", "expose"))["exposed"]
    inet_before = (await nft_table(a, "inet", TABLE)).drops_for(site.public)
    assert inet_before is not None

    # Datagrams from the public address are dropped on A's way out; one from A's channel
    # address, sent after them on the same path, arrives: the receiver ends on it.
    receiver = await lan.start_tool("c", "udp-recv", "--port", "9999", "--stop-from", site.ip["a"])
    await eventually(lambda: receiver.seen("ready"), 20, "the UDP receiver")
    udp = ["--dst", site.ip["c"], "--port", "9999"]
    dropped = await run_tool(a, "udp-send", "--src", site.public, "--count", "3", *udp)
    assert dropped["sent"] == 0 and len(dropped["errors"]) == 3, dropped
    control = await run_tool(a, "udp-send", "--src", site.ip["a"], *udp)
    assert control["sent"] == 1, control
    received = (await receiver.finish())[-1]
    assert received["sources"] == [site.ip["a"]], received
    inet_after = (await nft_table(a, "inet", TABLE)).drops_for(site.public)
    assert inet_after is not None and inet_after.packets >= inet_before.packets + 3

    # The address put back behind Tandem's back (a frozen node, an operator): still silent.
    sh("ip", "-n", a, "addr", "add", f"{site.public}/32", "dev", "eth0")
    status = await site.identity("a", "status")
    assert status["exposed"] is False and "filter drops it" in status["detail"], status
    arp_before = (await nft_table(a, "arp", TABLE)).drops_for(site.public)
    assert arp_before is not None
    sampler = await lan.start_tool("c", "sample", "--iface", "eth0", "--target", site.public,
                               "--sips", site.sips, "--probes", "10")  # fmt: skip
    await sampler.finish()
    answered = sampler.replies()
    assert answered, "B never answered the ARP probes"
    assert set().union(*answered.values()) == {await mac(site.ns("b"), "eth0")}, answered

    async def a_reply_dropped() -> bool:
        rule = (await nft_table(a, "arp", TABLE)).drops_for(site.public)
        return rule is not None and rule.packets > arp_before.packets

    await eventually(a_reply_dropped, 10, "A's ARP replies counted as dropped")
    assert await http_body(c, site.url()) == "B"

    rehidden = await site.identity("a", "hide")
    assert rehidden["detail"].startswith("removed from eth0"), rehidden  # not "already"
    assert site.public not in await addresses(a, "eth0")
    # The channel address on the same NIC keeps serving while A is hidden.
    assert await http_body(c, site.url(site.ip["a"])) == "A"


async def test_reset_on_start_hides_what_a_previous_run_left_exposed(lan: Lan) -> None:
    site = single_nic(lan)
    a = site.ns("a")
    assert (await site.identity("a", "expose"))["exposed"]
    # A new identity instance: an agent restarting on a node left exposed.
    reset = await site.identity("a", "reset")
    assert reset["exposed"] is False and reset["detail"] == "hidden at start (was on eth0)", reset
    assert (await site.identity("a", "status"))["exposed"] is False
    assert site.public not in await addresses(a, "eth0")
    assert (await nft_table(a, "inet", TABLE)).drops_for(site.public) is not None
    assert (await nft_table(a, "arp", TABLE)).drops_for(site.public) is not None
    again = await site.identity("a", "reset")
    assert again["detail"].startswith("hidden at start: "), again

    missing = await site.identity("a", "expose", interface="nope0")
    assert "no interface 'nope0'" in missing["error"], missing
    no_nft = await site.identity("a", "hide", nft="/nonexistent/nft")
    assert "not found" in no_nft["error"], no_nft


async def test_two_nics_public_address_only_on_the_public_one(lan: Lan) -> None:
    chan, pub = free_subnets(2)
    ip = {}
    for n, host in enumerate("ab", 1):
        lan.add_host(host, {"eth0": "chan", "eth1": "pub"}, {"eth0": [f"{chan[n]}/24"]})
        ip[host] = str(chan[n])
    lan.add_host("c", {"eth0": "pub"}, {"eth0": [f"{pub[3]}/24"]})
    # The nodes have no address of their own on the public NIC: the public address brings
    # the subnet's route with it (/24).
    site = Site(lan, ip, str(pub[100]), interface="eth1", channel="eth0", prefix=24)
    site.serve()
    a, b = site.ns("a"), site.ns("b")
    await site.identity("a", "reset")
    await site.identity("b", "reset")

    exposed = await site.identity("a", "expose")
    assert "public NIC eth1, channel NIC eth0" in exposed["detail"], exposed
    assert site.public in await addresses(a, "eth1")
    assert site.public not in await addresses(a, "eth0")
    await site.client_reaches("A")

    await site.identity("a", "hide")
    await site.identity("b", "expose")
    await site.client_reaches("B")
    assert site.public not in await addresses(a, "eth1")
    assert (await nft_table(a, "inet", TABLE)).drops_for(site.public) is not None
    # The channel link works both ways while A is hidden.
    assert await http_body(a, site.url(ip["b"])) == "B"
    assert await http_body(b, site.url(ip["a"])) == "A"

    # A stray copy on the channel NIC is removed when A exposes again.
    sh("ip", "-n", a, "addr", "add", f"{site.public}/32", "dev", "eth0")
    await site.identity("b", "hide")
    back = await site.identity("a", "expose")
    assert "removed it from eth0" in back["detail"], back
    assert site.public not in await addresses(a, "eth0")
    assert site.public in await addresses(a, "eth1")
    await site.client_reaches("A")


async def test_ipv6_public_address(lan: Lan) -> None:
    site = single_nic(lan, ipv6=True)
    site.serve()
    a = site.ns("a")
    await site.identity("a", "reset")
    exposed = await site.identity("a", "expose")
    assert exposed["exposed"] and "no announcement for IPv6" in exposed["detail"], exposed
    assert ipaddress.ip_address(exposed["address"]) == ipaddress.ip_address(site.public)
    await site.client_reaches("A")

    hidden = await site.identity("a", "hide")
    assert hidden["exposed"] is False and "removed from eth0" in hidden["detail"], hidden
    assert site.public not in await addresses(a, "eth0")
    assert (await nft_table(a, "inet", TABLE)).drops_for(site.public) is not None
    assert not (await nft_table(a, "arp", TABLE)).present  # no ARP for IPv6
    assert (await site.identity("a", "hide"))["detail"].startswith("already hidden")


def _in_order(answers: list[str], first: str, then: str) -> bool:
    """``first`` answered, then ``then``, never ``first`` again once ``then`` had."""
    if not answers or answers[0] != first or answers[-1] != then:
        return False
    return first not in answers[answers.index(then) :]


async def test_switchover_between_real_agents_never_shows_two_answers(
    lan: Lan,
    tmp_path: Path,
    nats_binary: str,
    bus_secrets: SecureBusFiles,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    (net,) = free_subnets(1)
    for n, host in enumerate("abc", 1):
        lan.add_host(host, {"eth0": "chan"}, {"eth0": [f"{net[n]}/24"]})
    # The bus and the orchestrator run in the root namespace, reached through its leg.
    lan.add_root_leg("chan", f"{net[254]}/24")
    public = str(net[100])
    table = table_name_for("lan-e2e")  # the agents derive it from the cluster name
    nats = NatsServer(
        tmp_path / "nats",
        name="tandem-lan",
        host=str(net[254]),
        monitor_port=None,
        extra_config=bus_secrets.server_config(),
    )
    # The suite's certificate names localhost, not this LAN address: clients check that name.
    monkeypatch.setenv("TANDEM_BUS_TLS_SERVER_NAME", "localhost")
    await asyncio.to_thread(nats.start)
    pair = Pair(cluster="lan-e2e", tmp=tmp_path, bus_url=nats.url, public_port=None)
    try:
        await _switchover_and_restart(lan, pair, net, public, table)
    finally:
        await asyncio.to_thread(pair.stop_all)
        await asyncio.to_thread(nats.stop)


async def _switchover_and_restart(
    lan: Lan, pair: Pair, net: ipaddress.IPv4Network, public: str, table: str
) -> None:
    a, b, c = lan.ns("a"), lan.ns("b"), lan.ns("c")
    nodes = {"primary": ("a", "secondary", "active"), "secondary": ("b", "primary", "passive")}
    for node, (host, peer, role) in nodes.items():
        agent = lan_agent(pair.tmp, pair.cluster, node, peer=peer, netns=lan.ns(host),
                          bus_url=pair.bus_url, public=public, identity=node,
                          initial_role=role)  # fmt: skip
        pair.agents[node] = agent.start()
    pair.add_orchestrator().start()
    await leader_ready(pair)
    await both_nodes_ready(pair)
    url = f"http://{public}:{PORT}/items/whoami"

    async def reaches(name: str) -> bool:
        return await http_body(c, url) == name

    await eventually(lambda: reaches("primary"), 60, "C served by primary on the public IP")
    mac_a, mac_b = await mac(a, "eth0"), await mac(b, "eth0")
    sips = ",".join(str(net[200 + i]) for i in range(40))
    sampler = await lan.start_tool("c", "sample", "--iface", "eth0", "--target", public,
                                   "--sips", sips, "--http", url)  # fmt: skip

    def sampled(who: str, name: str) -> bool:
        macs = set().union(*sampler.replies().values())
        return who in macs and sampler.http()[-3:] == [name] * 3

    await eventually(lambda: sampled(mac_a, "primary"), 30, "the sampler to see primary")
    async with pair.api() as api:
        answer = await api.post(
            f"/api/v1/clusters/{pair.cluster}/switchover", json={"to": "secondary"}
        )
    assert answer.status_code == 202, answer.text
    saga = await wait_saga(pair, answer.json()["saga_id"], timeout=45)
    assert saga["state"] == "completed", saga
    await eventually(lambda: sampled(mac_b, "secondary"), 30, "the sampler to see secondary")
    await sampler.finish()

    replies = sampler.replies()
    assert not {p: m for p, m in replies.items() if len(m) > 1}, "A and B answered one probe"
    by_probe = [next(iter(macs)) for _, macs in sorted(replies.items())]
    log.info(
        "sampler: %d ARP probes, answered by A %d, by B %d; HTTP answers %s",
        len(sampler.seen("probe")),
        by_probe.count(mac_a),
        by_probe.count(mac_b),
        {name: sampler.http().count(name) for name in ("primary", "secondary", None)},
    )
    assert _in_order(by_probe, mac_a, mac_b), by_probe
    named = [name for name in sampler.http() if name is not None]
    assert _in_order(named, "primary", "secondary"), named
    assert public not in await addresses(a, "eth0")
    assert public in await addresses(b, "eth0")
    for family in ("inet", "arp"):
        assert (await nft_table(a, family, table)).drops_for(public) is not None, family
        assert not (await nft_table(b, family, table)).present, family

    # A crashes and, before its agent is back, the node is left as an exposed one would be
    # (address up, no filter): the restarted agent hides it again.
    agent_a = pair.agents["primary"]
    assert agent_a.proc is not None
    agent_a.proc.kill()
    await asyncio.to_thread(agent_a.proc.wait, 10)
    sh("ip", "-n", a, "addr", "add", f"{public}/32", "dev", "eth0")
    for family in ("inet", "arp"):
        sh("ip", "netns", "exec", a, "nft", "delete", "table", family, table)
    agent_a.start()

    async def hidden_again() -> bool:
        inet = await nft_table(a, "inet", table)
        gone = public not in await addresses(a, "eth0")
        return gone and inet.drops_for(public) is not None

    await eventually(hidden_again, 60, "the restarted agent to hide A")
    await both_nodes_ready(pair)
    assert public not in await addresses(a, "eth0")
    assert (await nft_table(a, "arp", table)).drops_for(public) is not None
    await eventually(lambda: reaches("secondary"), 30, "C still served by secondary")
