"""The demo pair of ``tandem up``: two node configs protecting the demo application (a small
HTTP service that stores what it is sent in the protected folder)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

DEMO_CLUSTER = "demo"
DEMO_NODES = ("primary", "secondary")
DEMO_APP = "demo-web"


def demo_folder(root: Path, node: str) -> Path:
    """The demo application's data on ``node``: written on the Active, replicated to the other."""
    return root / "demo" / node / "data"


def _q(value: object) -> str:
    # JSON strings, numbers, booleans and arrays of them are valid TOML values.
    return json.dumps(str(value) if isinstance(value, Path) else value)


def demo_node_config(
    root: Path, node: str, bus_url: str, port: int, bus_port: int, public_port: int
) -> str:
    """The TOML config of one demo node (see examples/node.toml for every field)."""
    base = root / "demo" / node
    peers = [n for n in DEMO_NODES if n != node]
    data = demo_folder(root, node)
    app_argv = [sys.executable, "-m", "tandem.agent.demoapp", "--data", str(data)]
    app_argv += ["--port", str(port)]
    return f"""# Demo node written by `tandem up`.
cluster = {_q(DEMO_CLUSTER)}
node = {_q(node)}
identity = {_q(node)}
peers = {_q(peers)}
state_dir = {_q(base / "state")}

[bus]
servers = {_q([bus_url])}

[replication]
protected_root = {_q(data)}
capture = "watch"
initial_role = {_q("active" if node == DEMO_NODES[0] else "passive")}

[[applications]]
name = {_q(DEMO_APP)}
start = {_q(app_argv)}
log_file = {_q(base / "demo-web.log")}
stop_grace_s = 5

[[checks]]
name = "demo-http"
plugin = "http"
url = {_q(f"http://127.0.0.1:{port}/health")}
application = {_q(DEMO_APP)}
interval_s = 1
timeout_s = 2

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

# Clients use 127.0.0.1:{public_port}: only the Active listens there, forwarding to its app.
[public]
kind = "loopback"
address = "127.0.0.1"
port = {public_port}
forward_to = {port}
"""


def write_demo_configs(
    root: Path, bus_url: str, bus_port: int, ports: dict[str, int], public_port: int
) -> dict[str, Path]:
    paths = {}
    for node in DEMO_NODES:
        demo_folder(root, node).mkdir(parents=True, exist_ok=True)
        path = root / "demo" / node / "node.toml"
        path.write_text(demo_node_config(root, node, bus_url, ports[node], bus_port, public_port))
        paths[node] = path
    return paths
