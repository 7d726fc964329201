"""``tandem status``, ``switchover``, ``failover``, ``group switchover``: the operator's
commands, through the orchestrator's REST API.

Exit codes: 0 done, 1 the operation failed or the wait timed out, 2 refused (bad request,
not allowed, missing ``--confirm``), 3 the API is unreachable.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tandem.cli.api_client import (
    Accepted,
    ApiClient,
    ApiError,
    ApiUnreachable,
    Cluster,
    Node,
    Saga,
    SagaStep,
    resolve_api_url,
    resolve_token,
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_REFUSED = 2
EXIT_UNREACHABLE = 3
EXIT_INTERRUPTED = 130

POLL_INTERVAL_S = 0.2
HTTP_TIMEOUT_S = 10.0
DEFAULT_REASON = "requested with the tandem CLI"

#: How the commands get their client; tests replace it (e.g. with an httpx.MockTransport).
client_factory: Callable[[str, str | None, float], ApiClient] = ApiClient
#: The wait loop's clock and sleep (tests replace them to make time pass instantly).
clock: Callable[[], float] = time.monotonic
sleep: Callable[[float], None] = time.sleep

Action = Literal["switchover", "failover", "group switchover"]


def _client(api: str | None, token: str | None) -> ApiClient:
    return client_factory(resolve_api_url(api), resolve_token(token), HTTP_TIMEOUT_S)


# -- errors -------------------------------------------------------------------------------------


def report_unreachable(err: Console, exc: ApiUnreachable) -> int:
    err.print(f"[red]cannot reach the Tandem API at {escape(exc.url)}: {escape(exc.reason)}[/]")
    err.print(
        "give --api or set TANDEM_API_URL (is `tandem up` or the orchestrator running?)",
        markup=False,
    )
    return EXIT_UNREACHABLE


def report_api_error(err: Console, exc: ApiError, what: str) -> int:
    """Print the API's detail; 2 for a refusal (4xx), 1 for the API's own failure."""
    err.print(f"[red]{escape(what)}: {exc.status} {escape(exc.detail)}[/]")
    if exc.status in (401, 403):
        err.print("give a token allowed to do this with --token or TANDEM_API_TOKEN", markup=False)
    return EXIT_REFUSED if 400 <= exc.status < 500 else EXIT_FAILED


# -- status -------------------------------------------------------------------------------------

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
    """``demo  serving  primary serves; secondary in sync`` (rich markup, coloured)."""
    service = cluster.service or "unknown"
    reason = cluster.service_reason or (
        "the orchestrator does not say whether anyone serves" if service == "unknown" else ""
    )
    style = _SERVICE_STYLE.get(service, "dim")
    label = service.replace("_", " ")
    line = f"{escape(cluster.name)}  [{style}]{escape(label)}[/]  {escape(reason)}".rstrip()
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


def run_status(
    console: Console, err: Console, *, api: str | None, token: str | None, cluster: str | None
) -> int:
    try:
        with _client(api, token) as client:
            clusters = [client.cluster(cluster)] if cluster else client.clusters()
            sagas: dict[str, Saga] = {}
            for c in clusters:
                if c.saga:
                    try:
                        sagas[c.saga] = client.saga(c.saga)
                    except ApiError:
                        pass  # shown by id only
    except ApiUnreachable as exc:
        return report_unreachable(err, exc)
    except ApiError as exc:
        return report_api_error(err, exc, "status")
    render_status(console, clusters, sagas)
    return EXIT_OK


# -- waiting for a saga ---------------------------------------------------------------------


@dataclass(frozen=True)
class WaitResult:
    #: The last state seen (None: never read).
    saga: Saga | None
    timed_out: bool
    #: The last transient error when timed out (API unreachable or failing meanwhile).
    error: str | None = None


def wait_for_saga(
    fetch: Callable[[str], Saga],
    saga_id: str,
    timeout_s: float,
    *,
    interval_s: float = POLL_INTERVAL_S,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    on_update: Callable[[Saga], None] | None = None,
) -> WaitResult:
    """Poll ``fetch(saga_id)`` every ``interval_s`` until the saga ends or ``timeout_s`` passes.

    An unreachable API or a 5xx (e.g. while another orchestrator takes the lead) is retried
    until the deadline; a 4xx is raised.
    """
    deadline = clock() + timeout_s
    last: Saga | None = None
    error: str | None = None
    while True:
        try:
            saga = fetch(saga_id)
        except ApiUnreachable as exc:
            error = str(exc)
        except ApiError as exc:
            if exc.status < 500:
                raise
            error = f"{exc.status} {exc.detail}"
        else:
            error = None
            last = saga
            if on_update is not None:
                on_update(saga)
            if saga.finished:
                return WaitResult(saga, timed_out=False)
        remaining = deadline - clock()
        if remaining <= 0:
            return WaitResult(last, timed_out=True, error=error)
        sleep(min(interval_s, remaining))


_STEP_MARK = {
    "completed": "[green]ok[/]",
    "failed": "[red]FAILED[/]",
    "compensated": "[yellow]undone[/]",
    "running": "[cyan]running[/]",
    "pending": "[dim]not run[/]",
}


def print_steps(console: Console, saga: Saga) -> None:
    for position, step in enumerate(saga.steps, 1):
        where = f" on {step.node}" if step.node else ""
        mark = _STEP_MARK.get(step.state, escape(step.state))
        why = f": {escape(step.reason)}" if step.reason else ""
        console.print(
            f"  {position}. {escape(step.name)}{escape(where)}  {mark}{why}", highlight=False
        )


def follow_saga(
    console: Console, err: Console, client: ApiClient, saga_id: str, timeout_s: float, label: str
) -> int:
    try:
        with console.status(escape(f"{label}: saga {saga_id} accepted"), spinner="dots") as spinner:
            result = wait_for_saga(
                client.saga,
                saga_id,
                timeout_s,
                interval_s=POLL_INTERVAL_S,
                sleep=sleep,
                clock=clock,
                on_update=lambda saga: spinner.update(escape(describe_progress(saga))),
            )
    except ApiError as exc:
        report_api_error(err, exc, f"lost track of saga {saga_id}")
        return EXIT_FAILED
    except KeyboardInterrupt:
        err.print(f"stopped waiting; saga {saga_id} goes on (see `tandem status`)", markup=False)
        return EXIT_INTERRUPTED
    saga = result.saga
    if saga is not None:
        print_steps(console, saga)
    if result.timed_out:
        where = f" ({describe_progress(saga)})" if saga else ""
        err.print(
            f"[red]timed out after {timeout_s:g} s waiting for saga {escape(saga_id)}"
            f"{escape(where)}[/]"
        )
        if result.error:
            err.print(f"last error: {result.error}", markup=False)
        err.print("it may still finish: see `tandem status`", markup=False)
        return EXIT_FAILED
    assert saga is not None  # not timed out: the saga ended
    if saga.state == "completed":
        target = f": {saga.to_node} is Active" if saga.to_node and "group" not in saga.kind else ""
        console.print(f"[green]{escape(label)} completed{escape(target)}[/]")
        return EXIT_OK
    if saga.state == "needs_operator":
        err.print(
            f"[red]{escape(label)} stopped past the role change and needs an operator: "
            f"{escape(saga.reason or 'no reason given')}[/]"
        )
        return EXIT_FAILED
    err.print(f"[red]{escape(label)} failed: {escape(saga.reason or 'no reason given')}[/]")
    return EXIT_FAILED


# -- switchover, failover, group switchover ---------------------------------------------------


def _submit(
    client: ApiClient, action: Action, target: str, to: str | None, reason: str
) -> Accepted:
    if action == "switchover":
        return client.switchover(target, to, reason)
    if action == "failover":
        return client.failover(target, to, reason)
    return client.group_switchover(target, reason)


def run_action(
    console: Console,
    err: Console,
    action: Action,
    target: str,
    *,
    api: str | None,
    token: str | None,
    to: str | None = None,
    reason: str | None = None,
    wait: bool = True,
    timeout_s: float = 300.0,
    confirm: bool = True,
) -> int:
    if action == "failover" and not confirm:
        err.print("[red]a failover needs --confirm[/]")
        err.print(
            "it makes a Passive the Active without the current Active's agreement;"
            " check that the Active is really down",
            markup=False,
        )
        return EXIT_REFUSED
    label = f"{action} of {target}"
    try:
        with _client(api, token) as client:
            try:
                accepted = _submit(client, action, target, to, reason or DEFAULT_REASON)
            except ApiError as exc:
                return report_api_error(err, exc, f"{label} refused")
            console.print(f"{escape(label)} accepted: saga {escape(accepted.saga_id)}")
            if not wait:
                follow = accepted.status_url or f"/api/v1/sagas/{accepted.saga_id}"
                console.print(f"follow it at {follow}", markup=False, highlight=False)
                return EXIT_OK
            return follow_saga(console, err, client, accepted.saga_id, timeout_s, label)
    except ApiUnreachable as exc:
        return report_unreachable(err, exc)
