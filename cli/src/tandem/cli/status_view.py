"""How ``tandem status`` shows the clusters: whether anyone serves (the service line), one
table row per node, then what runs or waits in each cluster; with the human units (bytes,
durations) and the saga progress line the other commands print too. Rendering only: reading
the API is ``operate.run_status``'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tandem.cli.api_models import Cluster, Node, Saga, SagaStep

_HEALTH_STYLE = {"ok": "green", "warning": "yellow", "critical": "red", "unknown": "dim"}
_SERVICE_STYLE = {
    "serving": "bold green",
    "degraded": "bold yellow",
    "down": "bold red",
    "needs_operator": "bold red",
}
#: Clusters whose nodes' passing checks may read "ok": someone serves.
_SERVES = frozenset({"serving", "degraded"})


def human_bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"


def human_seconds(s: float) -> str:
    """``4.1s``, ``12m05s``, ``3h12m``."""
    if s < 60:
        return f"{s:.1f}s"
    minutes = int(s // 60)
    if minutes < 60:
        return f"{minutes}m{int(s % 60):02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


def _lag(node: Node) -> str:
    """``0 B`` when nothing waits, else ``1.2 MiB, 3 batches, oldest 4.1s`` (the age only
    when the orchestrator knows it)."""
    parts = [human_bytes(node.lag_bytes)]
    if node.lag_batches:
        parts.append(f"{node.lag_batches} batch{'' if node.lag_batches == 1 else 'es'}")
    if node.lag_oldest_age_s:
        parts.append(f"oldest {human_seconds(node.lag_oldest_age_s)}")
    return ", ".join(parts)


def _since(at: datetime | None) -> str:
    """How long ago ``at`` was (``3h12m``), ``-`` when unknown."""
    if at is None:
        return "-"
    return human_seconds(max(0.0, (datetime.now(UTC) - at).total_seconds()))


def _age(seconds: float | None) -> str:
    """A heartbeat's or a lease renewal's age, ``-`` when never seen; red past 5 s."""
    if seconds is None:
        return "-"
    return f"[red]{human_seconds(seconds)} ago[/]" if seconds > 5 else f"{seconds:.1f}s ago"


def _styled(value: str | None, style: str | None = None) -> str:
    text = escape(value) if value else "-"
    return f"[{style}]{text}[/]" if style else text


def _notes(node: Node) -> str:
    notes = []
    replication = node.replica_state or node.replication
    if replication and replication != "in_sync":
        notes.append(replication.replace("_", " "))
    if node.fenced:
        since = f" since {node.fenced_since:%H:%M:%S}" if node.fenced_since else ""
        why = f": {node.fenced_reason}" if node.fenced_reason else ""
        notes.append(f"fenced{since}{why}")
    elif node.guard_deadline is not None:
        notes.append(f"guard deadline {node.guard_deadline.astimezone():%H:%M:%S.%f}"[:-3])
    for flag, text in (
        (node.isolated, "isolated"),
        (node.awaiting_operator, "awaiting operator (tandem reinstate)"),
        (node.standby, f"standby: {node.standby_reason}" if node.standby_reason else "standby"),
        (node.failover_mode == "managed", "managed failover"),
    ):
        if flag:
            notes.append(text)
    return ", ".join(notes)


def service_line(cluster: Cluster) -> str:
    """``demo  serving  primary serves; secondary in sync  clients: 10.0.0.50/32 on eth0``
    (rich markup, coloured; where clients reach the Active, as its lease says)."""
    service = cluster.service or "unknown"
    reason = cluster.service_reason or (
        "the orchestrator does not say whether anyone serves" if service == "unknown" else ""
    )
    style = _SERVICE_STYLE.get(service, "dim")
    label = service.replace("_", " ")
    line = f"{escape(cluster.name)}  [{style}]{escape(label)}[/]  {escape(reason)}".rstrip()
    active = next((n for n in cluster.nodes if n.name == cluster.active), None)
    if active is not None and active.public_address:
        line += f"  clients: {escape(active.public_address)}"
    if cluster.maintenance is not None:
        from tandem.cli.maintenance import describe

        line += f"  [bold yellow]{escape(describe(cluster.maintenance))}[/]"
    return line


def _health(node: Node, cluster: Cluster) -> str:
    """The node's health; passing checks read "ok" only in a cluster where someone serves."""
    if node.health == "ok" and cluster.service not in _SERVES:
        return _styled("checks pass", "dim")
    return _styled(node.health, _HEALTH_STYLE.get(node.health))


def status_table(clusters: list[Cluster]) -> Table:
    """One row per node; ``*`` marks the Active the orchestrator knows."""
    table = Table(
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
        caption="* the Active",
        caption_justify="left",
    )
    columns = ("cluster", "node", "identity", "role", "in role", "health", "alive", "heartbeat")
    for column in (*columns, "lease", "lag", "epoch"):
        right = column in ("in role", "heartbeat", "lease", "lag", "epoch")
        table.add_column(column, justify="right" if right else "left", no_wrap=True)
    table.add_column("notes", overflow="fold", min_width=8)
    for cluster in clusters:
        if not cluster.nodes:
            table.add_row(escape(cluster.name), "-", *[""] * 8, str(cluster.epoch))
        for i, node in enumerate(cluster.nodes):
            active = node.name == cluster.active
            table.add_row(
                escape(cluster.name) if i == 0 else "",
                f"[bold]{escape(node.name)} *[/]" if active else escape(node.name),
                _styled(node.identity),
                _styled(node.role, "bold" if node.role == "active" else None),
                _since(node.role_since),
                _health(node, cluster),
                "[green]yes[/]" if node.alive else "[red]no[/]",
                _age(node.heartbeat_age_s),
                _age(node.lease_age_s),
                _lag(node),
                str(cluster.epoch),
                escape(_notes(node)),
            )
        table.add_section()
    return table


def current_step(saga: Saga) -> SagaStep | None:
    """The step running now, else the next to run, else the last one."""
    for state in ("running", "pending"):
        for step in saga.steps:
            if step.state == state:
                return step
    return saga.steps[-1] if saga.steps else None


def describe_progress(saga: Saga, *, moves: bool = False) -> str:
    """``switchover s-1 (a -> b): step 2/4 promote on b (running)``."""
    what = f"{saga.kind.replace('_', ' ') or 'saga'} {saga.id}"
    if moves and saga.to_node:
        what += f" ({saga.from_node or '?'} -> {saga.to_node})"
    step = current_step(saga)
    if step is None:
        return f"{what}: {saga.state}"
    where = f" on {step.node}" if step.node else ""
    position = saga.steps.index(step) + 1
    return f"{what}: step {position}/{len(saga.steps)} {step.name}{where} ({step.state})"


def saga_lines(cluster: Cluster, saga: Saga | None) -> list[str]:
    """What is going on in a cluster: its running saga, a failover waiting for an operator."""
    lines = []
    if cluster.saga:
        running = describe_progress(saga, moves=True) if saga else f"saga {cluster.saga} running"
        lines.append(f"{cluster.name}: {running}")
    pending = cluster.pending_failover
    if pending:
        at = pending.recommended_at
        since = f" since {at:%Y-%m-%d %H:%M:%S %Z}".rstrip() if at else ""
        why = f" ({pending.reason})" if pending.reason else ""
        lines.append(
            f"{cluster.name}: failover pending: {pending.failed_node} failed{why}, "
            f"recommended to {pending.to}{since}; "
            f"confirm with: tandem failover {cluster.name} --confirm --to {pending.to}"
        )
    return lines


def render_status(console: Console, clusters: list[Cluster], sagas: Mapping[str, Saga]) -> None:
    if not clusters:
        console.print("the orchestrator knows no cluster yet")
        return
    for cluster in clusters:  # first: whether anyone serves
        console.print(service_line(cluster), highlight=False, soft_wrap=True)
    console.print(status_table(clusters))
    from tandem.cli.overview import problem_lines

    for cluster in clusters:
        for line in saga_lines(cluster, sagas.get(cluster.saga or "")) + problem_lines(cluster):
            console.print(line, markup=False, highlight=False, soft_wrap=True)
