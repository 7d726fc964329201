"""The demo pair of ``tandem up``: two node configs protecting the demo application (a small
HTTP service that stores what it is sent in the protected folder)."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path

from tandem.events.private_files import write_private

DEMO_CLUSTER = "demo"
DEMO_NODES = ("primary", "secondary")
DEMO_APP = "demo-web"


def demo_folder(root: Path, node: str) -> Path:
    """The demo application's data on ``node``: written on the Active, replicated to the other."""
    return root / "demo" / node / "data"


def _q(value: object) -> str:
    # JSON strings, numbers, booleans and arrays of them are valid TOML values.
    return json.dumps(str(value) if isinstance(value, Path) else value)


def pair_node_toml(
    *,
    cluster: str,
    node: str,
    nodes: tuple[str, ...],
    base: Path,
    data: Path,
    bus_url: str,
    app: str,
    app_port: int,
    check: str,
    check_interval_s: float,
    check_timeout_s: float,
    bus_login: str = "",
) -> str:
    """The part every node of a loopback pair shares (also used by the failover benchmark):
    watch replication of ``data``, the demo app on ``app_port`` with an http check, and the
    public port only the Active listens on is added by ``loopback_public_toml``.
    ``bus_login``: the ``[bus]`` table's lines that log the node in
    (``SecureBusFiles.login_toml``)."""
    app_argv = [sys.executable, "-m", "tandem.agent.demoapp", "--data", str(data)]
    app_argv += ["--port", str(app_port)]
    return f"""cluster = {_q(cluster)}
node = {_q(node)}
identity = {_q(node)}
peers = {_q([n for n in nodes if n != node])}
state_dir = {_q(base / "state")}

[bus]
servers = {_q([bus_url])}
{bus_login}
[replication]
protected_root = {_q(data)}
capture = "watch"
initial_role = {_q("active" if node == nodes[0] else "passive")}

[[applications]]
name = {_q(app)}
start = {_q(app_argv)}
log_file = {_q(base / f"{app}.log")}
stop_grace_s = 5

[[checks]]
name = {_q(check)}
plugin = "http"
url = {_q(f"http://127.0.0.1:{app_port}/health")}
application = {_q(app)}
interval_s = {check_interval_s}
timeout_s = {check_timeout_s}
"""


def loopback_public_toml(app_port: int, public_port: int) -> str:
    return f"""
# Clients use 127.0.0.1:{public_port}: only the Active listens there, forwarding to its app.
[public]
kind = "loopback"
address = "127.0.0.1"
port = {public_port}
forward_to = {app_port}
"""


def demo_node_config(
    root: Path,
    node: str,
    bus_url: str,
    port: int,
    bus_port: int,
    public_port: int,
    bus_login: str = "",
) -> str:
    """The TOML config of one demo node (see examples/node.toml for every field)."""
    base = root / "demo" / node
    core = pair_node_toml(
        cluster=DEMO_CLUSTER,
        node=node,
        nodes=DEMO_NODES,
        base=base,
        data=demo_folder(root, node),
        bus_url=bus_url,
        app=DEMO_APP,
        app_port=port,
        check="demo-http",
        check_interval_s=1,
        check_timeout_s=2,
        bus_login=bus_login,
    )
    return f"""# Demo node written by `tandem up`.
{core}
[[checks]]
name = "disk"
plugin = "perf"
disk_path = {_q(base)}
interval_s = 10
timeout_s = 5

[[rules]]
name = "demo-down"
check = "demo-http"
metric = "up"
comparator = "=="
threshold = 0
consecutive = 3
recover_s = 120
actions = [
  {{ do = "alert" }},
  {{ do = "restart", tries = 3, delay_s = 1 }},
  {{ do = "switchover" }},
]

[network]
interval_s = 5
timeout_s = 2
targets = [{{ kind = "tcp", host = "127.0.0.1", port = {bus_port} }}]
{loopback_public_toml(port, public_port)}"""


def write_demo_configs(
    root: Path,
    bus_url: str,
    bus_port: int,
    ports: dict[str, int],
    public_port: int,
    bus_logins: Mapping[str, str] | None = None,
) -> dict[str, Path]:
    """``bus_logins``: each node's ``[bus]`` login lines; they hold its password, so the
    configs are written owner-only."""
    paths = {}
    for node in DEMO_NODES:
        demo_folder(root, node).mkdir(parents=True, exist_ok=True)
        path = root / "demo" / node / "node.toml"
        login = (bus_logins or {}).get(node, "")
        write_private(
            path, demo_node_config(root, node, bus_url, ports[node], bus_port, public_port, login)
        )
        paths[node] = path
    return paths
