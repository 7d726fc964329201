"""What ``tandem up`` prints once its stack runs: a table of where everything is."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from tandem.cli.demo import DEMO_NODES, demo_folder
from tandem.cli.supervisor import Child
from tandem.events.catalog import ServiceStarted
from tandem.events.embedded import NatsServer

if TYPE_CHECKING:
    from tandem.cli.up import ApiAccess


def _announces(child: Child) -> tuple[str, str]:
    """The (service, node) a child names in its ServiceStarted event."""
    if child.name.startswith("agent-"):
        return "agent", child.name.removeprefix("agent-")
    return child.name, child.name.replace("_", "-")


def stack_table(
    server: NatsServer,
    root: Path,
    children: list[Child],
    started: list[ServiceStarted],
    api: ApiAccess,
    public_port: int,
    stack: str = "tandem",
) -> Table:
    table = Table(title=f"Tandem is up: stack {stack}", show_lines=False)
    for col in ("component", "where", "status"):
        table.add_column(col)
    table.add_row("bus (nats-server)", server.url, "ready: TLS, login required")
    if server.http_port:
        table.add_row("bus monitoring", f"http://127.0.0.1:{server.http_port}", "")
    table.add_row("store", str(root), f"stack {stack}: tandem --stack {stack} ...")
    table.add_row("orchestrator API", f"{api.url}/api/v1  (docs: {api.url}/docs)", "")
    if any(c.name.startswith("agent-") for c in children):
        table.add_row("demo app", f"http://127.0.0.1:{public_port}/items", "on the Active")
        table.add_row("demo data (Active)", str(demo_folder(root, DEMO_NODES[0])), "write here")
        table.add_row(
            "demo replica (Passive)", str(demo_folder(root, DEMO_NODES[1])), "see it here"
        )
    if any(c.name == "notifier" for c in children):
        notifications = root / "notifier" / "notifications.jsonl"
        table.add_row("notifications (demo route)", str(notifications), "alerts, role changes")
    announced = {(e.payload.service, e.node) for e in started}
    for child in children:
        ok = _announces(child) in announced
        table.add_row(
            child.name,
            f"pid {child.pid}, log {child.log_path}",
            "started" if ok else "[red]no ServiceStarted yet[/]",
        )
    return table
