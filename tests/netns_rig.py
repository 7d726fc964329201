"""A little LAN of network namespaces for the LAN identity's system tests.

Layout: a "switch" namespace holds one Linux bridge per network (``br-<net>``); every host
(node A, node B, client C) is a namespace of its own with loopback up and one veth per network
it joins, whose other end is a port of that network's bridge. Optionally the root namespace
gets a leg on a bridge (a veth with an address), for services that run there (nats-server, the
orchestrator) and must be reachable from the hosts.

Every name carries a random tag (``td<6 hex>``), so parallel runs never meet. ``destroy`` kills
what still runs in the namespaces (by pid, from ``ip netns pids``) and deletes them, the root
leg with them; it is safe to call after any failure.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import os
import random
import secrets
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent_rig import AgentProcess, demo_app_toml, node_toml
from tandem.agent.identity.nftables import TableState, parse_table

log = logging.getLogger(__name__)

TOOLS = Path(__file__).with_name("netns_tools.py")


def sh(*argv: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def free_subnets(count: int) -> list[ipaddress.IPv4Network]:
    """Random /24s in 10.0.0.0/8 that overlap no route of the root namespace (the root leg
    adds one there)."""
    routes = json.loads(sh("ip", "-j", "route", "show", "table", "all").stdout or "[]")
    taken = []
    for route in routes:
        dst = route.get("dst", "")
        if dst in ("", "default") or ":" in dst:
            continue
        try:
            taken.append(ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False))
        except ValueError:
            continue
    found: list[ipaddress.IPv4Network] = []
    while len(found) < count:
        net = ipaddress.IPv4Network(f"10.{random.randint(100, 250)}.{random.randint(0, 255)}.0/24")
        if not any(net.overlaps(t) for t in taken + found):
            found.append(net)
    return found


@dataclass
class Lan:
    tag: str = field(default_factory=lambda: f"td{secrets.token_hex(3)}")
    namespaces: list[str] = field(default_factory=list)
    root_legs: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    tools: list[Tool] = field(default_factory=list)

    @property
    def switch(self) -> str:
        return f"{self.tag}-sw"

    def ns(self, host: str) -> str:
        return f"{self.tag}-{host}"

    def _add_namespace(self, name: str) -> None:
        sh("ip", "netns", "add", name)
        self.namespaces.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")

    def create(self, *networks: str) -> Lan:
        self._add_namespace(self.switch)
        for net in networks:
            # No multicast snooping: with no querier on this LAN it would only get in the way
            # of IPv6 neighbour discovery.
            sh("ip", "-n", self.switch, "link", "add", f"br-{net}", "type", "bridge",
               "mcast_snooping", "0")  # fmt: skip
            sh("ip", "-n", self.switch, "link", "set", f"br-{net}", "up")
        return self

    def add_host(self, host: str, links: dict[str, str], addresses: dict[str, list[str]]) -> str:
        """``links``: interface in the host -> network; ``addresses``: interface -> CIDRs."""
        ns = self.ns(host)
        self._add_namespace(ns)
        for ifname, net in links.items():
            port = f"{host}-{ifname}"[:15]
            sh(
                "ip", "-n", self.switch, "link", "add", port, "type", "veth",
                "peer", "name", ifname, "netns", ns,
            )  # fmt: skip
            sh("ip", "-n", self.switch, "link", "set", port, "master", f"br-{net}", "up")
            for cidr in addresses.get(ifname, []):
                # nodad: an IPv6 address is usable at once rather than after DAD.
                extra = ["nodad"] if ":" in cidr else []
                sh("ip", "-n", ns, "addr", "add", cidr, "dev", ifname, *extra)
            sh("ip", "-n", ns, "link", "set", ifname, "up")
        return ns

    def add_root_leg(self, net: str, cidr: str) -> str:
        """A veth from the root namespace into ``net``'s bridge, with ``cidr`` on the root end."""
        leg = f"{self.tag}h{len(self.root_legs)}"
        sh(
            "ip", "link", "add", leg, "type", "veth",
            "peer", "name", f"root{len(self.root_legs)}", "netns", self.switch,
        )  # fmt: skip
        self.root_legs.append(leg)
        sh("ip", "-n", self.switch, "link", "set", f"root{len(self.root_legs) - 1}",
           "master", f"br-{net}", "up")  # fmt: skip
        sh("ip", "addr", "add", cidr, "dev", leg)
        sh("ip", "link", "set", leg, "up")
        return leg

    def spawn(self, host: str, *argv: str, log_to: Path | None = None) -> subprocess.Popen[bytes]:
        out = log_to.open("ab") if log_to is not None else subprocess.DEVNULL
        try:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.ns(host), *argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            if log_to is not None:
                out.close()  # type: ignore[union-attr]
        self.procs.append(proc)
        return proc

    async def start_tool(self, host: str, *args: str) -> Tool:
        """A long-running ``netns_tools`` command in ``host``, ended by ``close``."""
        started = await Tool.start(self.ns(host), *args)
        self.tools.append(started)
        return started

    async def close(self) -> None:
        for started in self.tools:
            await started.finish(10)
        self.tools.clear()
        self.destroy()

    def destroy(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        for ns in self.namespaces:
            # Whatever still runs inside (an application an agent started): by pid, ours only.
            pids = sh("ip", "netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
        for leg in self.root_legs:
            sh("ip", "link", "del", leg, check=False)
        for ns in reversed(self.namespaces):
            sh("ip", "netns", "del", ns, check=False)
        self.namespaces.clear()


async def run_in(ns: str, *argv: str, timeout: float = 30) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        "ip",
        "netns",
        "exec",
        ns,
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"{' '.join(argv)} in {ns} did not finish in {timeout}s") from None
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


async def tool(ns: str, *args: str, timeout: float = 30) -> dict[str, Any]:
    """Run a ``netns_tools`` command in ``ns``; its last JSON line."""
    code, out, err = await run_in(ns, sys.executable, str(TOOLS), *args, timeout=timeout)
    lines = out.strip().splitlines()
    if not lines:
        raise AssertionError(f"netns_tools {args[0]} in {ns} printed nothing ({code}): {err}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


async def http_body(ns: str, url: str) -> str | None:
    answer = await tool(ns, "get", url, "--timeout", "2")
    body: str | None = answer.get("body")
    return body


async def nft_table(ns: str, family: str, table: str) -> TableState:
    code, out, err = await run_in(ns, "nft", "-j", "list", "table", family, table)
    if code != 0:
        assert "No such file or directory" in err, err
        return parse_table(family, None)
    return parse_table(family, json.loads(out))


async def addresses(ns: str, ifname: str) -> list[str]:
    code, out, err = await run_in(ns, "ip", "-j", "addr", "show", "dev", ifname)
    assert code == 0, err
    return [a["local"] for link in json.loads(out) for a in link.get("addr_info", [])]


async def mac(ns: str, ifname: str) -> str:
    code, out, err = await run_in(ns, "ip", "-j", "link", "show", "dev", ifname)
    assert code == 0, err
    value: str = json.loads(out)[0]["address"]
    return value


@dataclass
class Tool:
    """A ``netns_tools`` command running in a namespace; its JSON lines collected as they
    come (the ARP sampler, a UDP receiver)."""

    proc: asyncio.subprocess.Process
    lines: list[dict[str, Any]] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, ns: str, *args: str) -> Tool:
        proc = await asyncio.create_subprocess_exec(
            "ip", "netns", "exec", ns, sys.executable, str(TOOLS), *args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        started = cls(proc)
        started.reader = asyncio.create_task(started._read())
        return started

    async def _read(self) -> None:
        assert self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.lines.append(json.loads(line))

    def seen(self, key: str) -> list[dict[str, Any]]:
        return [line for line in list(self.lines) if key in line]

    async def ask(self, request: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
        """One request line in, the next answer line out (``identity-server``)."""
        assert self.proc.stdin is not None
        count = len(self.lines)
        self.proc.stdin.write(json.dumps(request).encode() + b"\n")
        await self.proc.stdin.drain()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(self.lines) <= count:
            if self.proc.returncode is not None or loop.time() > deadline:
                raise AssertionError(f"no answer to {request} (exit {self.proc.returncode})")
            await asyncio.sleep(0.01)
        return self.lines[count]

    async def finish(self, timeout: float = 30) -> list[dict[str, Any]]:
        """Close its stdin (the sampler ends after a short linger; others end on their own)
        and wait for its last line."""
        assert self.proc.stdin is not None
        if not self.proc.stdin.is_closing():
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
            if self.reader is not None:
                await asyncio.wait_for(self.reader, timeout)
        finally:
            if self.proc.returncode is None:
                self.proc.kill()
                await self.proc.wait()
        return self.lines

    def replies(self) -> dict[int, set[str]]:
        """Sampler: probe number -> the MACs that answered it."""
        found: dict[int, set[str]] = {}
        for line in self.seen("reply"):
            found.setdefault(line["reply"], set()).add(line["mac"])
        return found

    def http(self) -> list[str | None]:
        """Sampler: the HTTP answers (the node's name, None when nothing answered), in order."""
        return [line["http"] for line in self.seen("http")]


@dataclass
class NetnsAgent(AgentProcess):
    """A node agent (``python -m tandem.agent``) running inside a host's namespace."""

    netns: str = ""

    def start(self) -> NetnsAgent:
        env = {**os.environ, "TANDEM_LOG_LEVEL": "INFO"}
        argv = ["ip", "netns", "exec", self.netns, sys.executable, "-m", "tandem.agent"]
        with self.log.open("ab") as out:
            # ip netns exec execs the command itself: the pid is the agent's, signals reach it.
            self.proc = subprocess.Popen(
                [*argv, "--config", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        return self


def lan_agent(
    tmp: Path,
    cluster: str,
    node: str,
    *,
    peer: str,
    netns: str,
    bus_url: str,
    public: str,
    identity: str,
    initial_role: str,
    app_port: int = 8080,
) -> NetnsAgent:
    """A node agent in ``netns`` with a lan identity on eth0 and the demo app on
    ``0.0.0.0:app_port``, whose item ``whoami`` holds the node's name (kept out of the
    replicated folder, so each node answers with its own name)."""
    folder = tmp / node
    app, data = folder / "app", folder / "data"
    app.mkdir(parents=True, exist_ok=True)
    data.mkdir(parents=True, exist_ok=True)
    (app / "whoami").write_text(node)
    toml = node_toml(
        cluster,
        node,
        folder / "state",
        bus_url,
        identity=identity,
        peers=[peer],
        initial_role=initial_role,
        protected_root=data,
    )
    toml += demo_app_toml(app, app_port, host="0.0.0.0")
    toml += f"""
[public]
kind = "lan"
address = {json.dumps(public)}
interface = "eth0"
"""
    config = folder / "node.toml"
    config.write_text(toml)
    return NetnsAgent(config, folder / "agent.log", netns=netns)
