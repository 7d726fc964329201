"""The chaos topology on the wire, for the bus partition: the two node agents run in network
namespaces (hosts ``a`` and ``b`` of a ``netns_rig.Lan``) with the ``lan`` public identity (a
shared IP on eth0, nftables filter on the Passive) and the demo app on ``0.0.0.0:8080``
storing in the replicated folder; the 3-node NATS cluster and both orchestrators run in the
root namespace, the NATS servers on its leg into the LAN. All real.

A partition drops, with nftables inside the node's namespace, every packet to or from the bus
address (every NATS server); ``heal`` deletes that table. Who serves is read from outside:
a node serves when its namespace holds the public address on eth0.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import sys
from pathlib import Path

from chaos_topology import CLUSTER, NODES, Topology, with_servers

from agent_rig import demo_app_toml, node_toml
from netns_rig import Lan, sh

log = logging.getLogger(__name__)

HOSTS = {"primary": "a", "secondary": "b"}
PORT = 8080
TABLE = "chaospartition"


class NetnsTopology(Topology):
    def __init__(
        self, lan: Lan, net: ipaddress.IPv4Network, root: Path | None = None, keep: bool = False
    ) -> None:
        super().__init__(root, keep, host=str(net[254]))
        self.lan, self.net = lan, net
        self.public_host, self.public_port = str(net[100]), PORT
        for n, host in enumerate("abc", 1):
            lan.add_host(host, {"eth0": "chan"}, {"eth0": [f"{net[n]}/24"]})
        lan.add_root_leg("chan", f"{self.host}/24")

    def ns(self, node: str) -> str:
        return self.lan.ns(HOSTS[node])

    def node_config(self, node: str) -> str:
        peer = next(n for n in NODES if n != node)
        folder = self.root / node
        toml = node_toml(
            CLUSTER,
            node,
            folder / "state",
            self.urls[0],
            identity=node,
            peers=[peer],
            initial_role="active" if node == NODES[0] else "passive",
            protected_root=self.data_dir(node),
        )
        toml += demo_app_toml(self.data_dir(node), PORT, host="0.0.0.0")
        toml += f"""
[public]
kind = "lan"
address = {json.dumps(self.public_host)}
interface = "eth0"
"""
        return with_servers(toml, self.urls)

    def add_agents(self) -> None:
        super().add_agents()
        self.app_ports = dict.fromkeys(NODES, PORT)

    def agent_argv(self, node: str, config: Path) -> list[str]:
        # ip netns exec execs the command itself: the pid is the agent's, signals reach it.
        return [
            "ip",
            "netns",
            "exec",
            self.ns(node),
            sys.executable,
            "-m",
            "tandem.agent",
            "--config",
            str(config),
        ]

    def serving(self, node: str) -> bool:
        done = sh(
            "ip", "-n", self.ns(node), "-j", "addr", "show", "dev", "eth0", check=False, timeout=5
        )
        try:
            links = json.loads(done.stdout or "[]")
        except ValueError:
            return False
        return any(
            a.get("local") == self.public_host for link in links for a in link.get("addr_info", [])
        )

    def partition(self, node: str) -> None:
        rules = (
            f"add table inet {TABLE}; "
            f"add chain inet {TABLE} o {{ type filter hook output priority 0; }}; "
            f"add chain inet {TABLE} i {{ type filter hook input priority 0; }}; "
            f"add rule inet {TABLE} o ip daddr {self.host} drop; "
            f"add rule inet {TABLE} i ip saddr {self.host} drop"
        )
        sh("ip", "netns", "exec", self.ns(node), "nft", rules)

    def heal(self, node: str) -> None:
        sh(
            "ip",
            "netns",
            "exec",
            self.ns(node),
            "nft",
            "delete",
            "table",
            "inet",
            TABLE,
            check=False,
        )
