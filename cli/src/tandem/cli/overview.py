"""``tandem status --json|--watch`` and ``tandem list``: the overview of every cluster, read
from the orchestrator's API (``status_view`` draws the table); what failed (open alerts, the
last saga that failed or stopped for an operator) under it.

Exit codes as ``operate``: 0 shown, 2 refused (unknown cluster, token), 3 unreachable.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any
from urllib.parse import quote

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.text import Text

from tandem.cli import operate, status_view
from tandem.cli.api_client import ApiClient, ApiError, ApiUnreachable
from tandem.cli.api_models import Cluster, Saga

#: The watch's pause between two reads (tests replace it).
sleep: Callable[[float], None] = time.sleep


def _at(at: datetime | None) -> str:
    return f" at {at.astimezone():%Y-%m-%d %H:%M:%S}" if at else ""


def problem_lines(cluster: Cluster) -> list[str]:
    """What an operator should look at: each open alert, and the last saga when it failed
    or stopped for an operator (with how to resume it)."""
    lines = [
        f"{cluster.name}: alert {a.code} on {a.node or '?'}{_at(a.raised_at)}: {a.message}"
        + (" (acknowledged)" if a.state == "acknowledged" else "")
        for a in cluster.alerts
    ]
    last = cluster.last_saga
    if last is not None and last.state in ("failed", "needs_operator"):
        kind = last.kind.replace("_", " ") or "saga"
        state = last.state.replace("_", " ")
        line = f"{cluster.name}: last {kind} {last.id} {state}{_at(last.ended_at)}: {last.reason}"
        if last.state == "needs_operator":
            line += f"; once fixed: tandem saga resume {last.id}"
        lines.append(line)
    return lines


def fetch(client: ApiClient, cluster: str | None) -> tuple[list[Cluster], dict[str, Saga]]:
    clusters = [client.cluster(cluster)] if cluster else client.clusters()
    sagas: dict[str, Saga] = {}
    for c in clusters:
        if c.saga:
            try:
                sagas[c.saga] = client.saga(c.saga)
            except ApiError:
                pass  # shown by id only
    return clusters, sagas


def run_status_json(console: Console, err: Console, *, api: str | None, token: str | None,
                    cluster: str | None) -> int:  # fmt: skip
    """The API's cluster views, as JSON (a list, or one object with ``--cluster``)."""
    path = f"/clusters/{quote(cluster, safe='')}" if cluster else "/clusters"
    try:
        with operate._client(api, token) as client:
            data = client.read(Any, path)
    except ApiUnreachable as exc:
        return operate.report_unreachable(err, exc)
    except ApiError as exc:
        return operate.report_api_error(err, exc, "status")
    console.print_json(json.dumps(data))
    return operate.EXIT_OK


def overview(clusters: list[Cluster], sagas: dict[str, Saga]) -> RenderableType:
    if not clusters:
        return Text("the orchestrator knows no cluster yet")
    parts: list[RenderableType] = [Text.from_markup(status_view.service_line(c)) for c in clusters]
    parts.append(status_view.status_table(clusters))
    for c in clusters:
        parts.extend(Text(line) for line in status_view.saga_lines(c, sagas.get(c.saga or "")))
        parts.extend(Text(line) for line in problem_lines(c))
    return Group(*parts)


def run_watch(console: Console, err: Console, *, api: str | None, token: str | None,
              cluster: str | None, every_s: float, rounds: int | None = None) -> int:  # fmt: skip
    """Redraw the overview every ``every_s`` until Ctrl-C (or ``rounds`` reads: tests). A
    read that fails is shown in place of the overview, and tried again."""
    done = 0
    try:
        with (
            operate._client(api, token) as client,
            Live(Text("reading..."), console=console, auto_refresh=False) as live,
        ):
            while rounds is None or done < rounds:
                done += 1
                try:
                    body = overview(*fetch(client, cluster))
                except ApiUnreachable as exc:
                    body = Text(f"cannot reach the Tandem API at {exc.url}: {exc.reason}", "red")
                except ApiError as exc:
                    if 400 <= exc.status < 500:
                        live.stop()
                        return operate.report_api_error(err, exc, "status")
                    body = Text(f"status: {exc.status} {exc.detail}", "red")
                header = Text(
                    f"every {every_s:g}s, read at {datetime.now().astimezone():%H:%M:%S} "
                    "(Ctrl-C to stop)",
                    "dim",
                )
                live.update(Group(header, body), refresh=True)
                if rounds is None or done < rounds:
                    sleep(every_s)
    except KeyboardInterrupt:
        return operate.EXIT_OK
    return operate.EXIT_OK


def run_list(console: Console, err: Console, *, api: str | None, token: str | None) -> int:
    """One line per cluster: its service, its Active and epoch, its nodes."""
    try:
        with operate._client(api, token) as client:
            clusters = client.clusters()
    except ApiUnreachable as exc:
        return operate.report_unreachable(err, exc)
    except ApiError as exc:
        return operate.report_api_error(err, exc, "list")
    if not clusters:
        console.print("the orchestrator knows no cluster yet", markup=False)
    for c in clusters:
        nodes = ", ".join(
            n.name + ("*" if n.name == c.active else "") + ("" if n.alive else " (not alive)")
            for n in c.nodes
        )
        extra = f"  epoch {c.epoch}  nodes {nodes or '-'}"
        if c.saga:
            extra += f"  saga {c.saga} running"
        console.print(status_view.service_line(c) + escape(extra), highlight=False, soft_wrap=True)
    return operate.EXIT_OK
