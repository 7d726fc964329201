"""``tandem history`` and ``tandem saga cancel|resume``: the switchovers and failovers a
cluster went through, and an operator's hold on a saga, through the orchestrator's API.

Exit codes as ``operate``: 0 done, 1 the saga did not end as asked (or the wait timed out),
2 refused (bad input, unknown saga, past its pivot...), 3 the API is unreachable.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import typer
from pydantic import BaseModel, ConfigDict
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tandem.cli import operate, status_view
from tandem.cli.api_client import ApiClient, ApiError, ApiUnreachable
from tandem.cli.maintenance import parse_duration
from tandem.cli.options import ApiOption, TokenOption

EXIT_CODES = (
    "Exit codes: 0 done, 1 the saga did not end as asked or the wait timed out, "
    "2 refused (the reason is printed), 3 the API is unreachable."
)

saga_app = typer.Typer(
    help="Act on one saga: cancel it before its role change, or resume it.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

console = Console()
err = Console(stderr=True)


class SagaSummary(BaseModel):
    """One entry of ``GET /api/v1/sagas`` (fields a newer orchestrator adds are ignored)."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    id: str
    kind: str = ""
    cluster: str = ""
    from_node: str | None = None
    to_node: str | None = None
    reason: str = ""
    who: str = ""
    automatic: bool = False
    started_at: datetime
    ended_at: datetime | None = None
    duration_s: float | None = None
    outcome: str = ""
    outcome_reason: str = ""
    resumes: int = 0


class ControlAnswer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    saga_id: str
    status_url: str = ""
    message: str = ""


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """An ISO time (local when it names no zone) or a duration back from now (``2h``,
    ``30m``, ``1d``); ValueError else."""
    now = now or datetime.now(UTC)
    try:
        return now - timedelta(seconds=parse_duration(text))
    except ValueError:
        pass
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--since {text!r} is neither a time (2026-12-03T05:00, ISO 8601) "
            "nor a duration (90s, 30m, 2h, 1d)"
        ) from None
    return at if at.tzinfo is not None else at.astimezone()


_OUTCOME_STYLE = {
    "completed": "green",
    "running": "cyan",
    "failed": "red",
    "needs_operator": "bold red",
    "cancelled": "yellow",
}


def history_table(sagas: list[SagaSummary]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for column in ("started", "cluster", "kind", "from -> to", "who", "why", "took", "outcome"):
        table.add_column(column, no_wrap=column not in ("why", "outcome"), overflow="fold")
    table.add_column("saga", no_wrap=True, style="dim")
    for s in sagas:
        took = status_view.human_seconds(s.duration_s) if s.duration_s is not None else "-"
        style = _OUTCOME_STYLE.get(s.outcome, "")
        outcome = escape(s.outcome.replace("_", " "))
        if s.outcome_reason and s.outcome != "completed":
            outcome += f": {escape(s.outcome_reason)}"
        if s.resumes:
            outcome += f" (resumed {s.resumes}x)"
        table.add_row(
            f"{s.started_at.astimezone():%Y-%m-%d %H:%M:%S}",
            escape(s.cluster),
            escape(s.kind.replace("_", " ")) + (" (auto)" if s.automatic else ""),
            escape(f"{s.from_node or '-'} -> {s.to_node or '-'}"),
            escape(s.who or "-"),
            escape(s.reason),
            took,
            f"[{style}]{outcome}[/]" if style else outcome,
            escape(s.id),
        )
    return table


def run_history(
    *,
    cluster: str | None,
    since: str | None,
    limit: int,
    as_json: bool,
    api: str | None,
    token: str | None,
) -> int:
    query: dict[str, Any] = {"limit": limit}
    if cluster:
        query["cluster"] = cluster
    if since:
        try:
            query["since"] = parse_since(since).isoformat()
        except ValueError as exc:
            err.print(f"[red]{escape(str(exc))}[/]")
            return operate.EXIT_REFUSED
    path = f"/sagas?{urlencode(query)}"
    try:
        with operate._client(api, token) as client:
            if as_json:
                raw = client.read(Any, path)
                console.print_json(json.dumps(raw))
                return operate.EXIT_OK
            sagas = client.read(list[SagaSummary], path)
    except ApiUnreachable as exc:
        return operate.report_unreachable(err, exc)
    except ApiError as exc:
        return operate.report_api_error(err, exc, "history")
    if not sagas:
        where = f" of {cluster}" if cluster else ""
        console.print(f"no switchover or failover{where} yet", markup=False)
        return operate.EXIT_OK
    console.print(history_table(sagas))
    return operate.EXIT_OK


def history(
    cluster: Annotated[
        str | None, typer.Option("--cluster", "-c", help="Only this cluster.")
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(help="Only those started since: an ISO time or a duration back (2h, 1d)."),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="The API's JSON, as it came.")] = False,
    api: ApiOption = None,
    token: TokenOption = None,
) -> None:
    """Each switchover and failover, newest first: when, from, to, why, who, how long, outcome.

    Who: the operator (role:6 hex of its token's hash), or the node whose rule asked.

    'orchestrator' is a failover the orchestrator started by itself (automatic).

    Example: tandem history --cluster demo --since 2h
    """
    raise typer.Exit(
        run_history(
            cluster=cluster, since=since, limit=limit, as_json=as_json, api=api, token=token
        )
    )


def _follow(client: ApiClient, saga_id: str, timeout_s: float, *, cancel: bool) -> int:
    """Wait for the saga to end; a cancel succeeds when it ends cancelled (undone)."""
    if not cancel:
        return operate.follow_saga(console, err, client, saga_id, timeout_s, f"saga {saga_id}")
    try:
        result = operate.wait_for_saga(
            client.saga, saga_id, timeout_s, sleep=operate.sleep, clock=operate.clock
        )
    except ApiError as exc:
        operate.report_api_error(err, exc, f"lost track of saga {saga_id}")
        return operate.EXIT_FAILED
    saga = result.saga
    if saga is not None:
        operate.print_steps(console, saga)
    if result.timed_out or saga is None:
        err.print(f"[red]timed out after {timeout_s:g} s waiting for saga {escape(saga_id)}[/]")
        return operate.EXIT_FAILED
    if saga.state == "failed" and saga.reason.startswith("cancelled by"):
        console.print(f"[yellow]saga {escape(saga_id)} cancelled: {escape(saga.reason)}[/]")
        return operate.EXIT_OK
    err.print(
        f"[red]saga {escape(saga_id)} ended {escape(saga.state)} before the cancel took "
        f"effect: {escape(saga.reason)}[/]"
    )
    return operate.EXIT_FAILED


def _control(
    verb: str, saga_id: str, reason: str | None, wait: bool, timeout_s: float,
    api: str | None, token: str | None,
) -> int:  # fmt: skip
    path = f"/sagas/{quote(saga_id, safe='')}/{verb}"
    try:
        with operate._client(api, token) as client:
            try:
                answer = client.send(
                    ControlAnswer, path, {"reason": reason or operate.DEFAULT_REASON}
                )
            except ApiError as exc:
                return operate.report_api_error(err, exc, f"{verb} of saga {saga_id} refused")
            console.print(answer.message or f"{verb} of saga {saga_id} accepted", markup=False)
            if not wait:
                return operate.EXIT_OK
            return _follow(client, saga_id, timeout_s, cancel=verb == "cancel")
    except ApiUnreachable as exc:
        return operate.report_unreachable(err, exc)


SagaArg = Annotated[str, typer.Argument(help="The saga's id (tandem history, tandem status).")]
ReasonOption = Annotated[
    str | None, typer.Option("--reason", help="Why; recorded with the operation.")
]
WaitOption = Annotated[
    bool, typer.Option("--wait/--no-wait", help="Follow the saga until it ends.")
]
TimeoutOption = Annotated[float, typer.Option("--timeout", help="How long to follow it (s).")]


@saga_app.command("cancel", epilog=EXIT_CODES)
def cancel(
    saga_id: SagaArg,
    reason: ReasonOption = None,
    wait: WaitOption = True,
    timeout: TimeoutOption = 120.0,
    api: ApiOption = None,
    token: TokenOption = None,
) -> None:
    """Cancel a saga before its role change: what it did is undone, in reverse.

    Past the role change (the pivot) it is refused: a saga then only goes forward.

    Example: tandem saga cancel 0193a5c2-... --reason "wrong target"
    """
    raise typer.Exit(_control("cancel", saga_id, reason, wait, timeout, api, token))


@saga_app.command("resume", epilog=EXIT_CODES)
def resume(
    saga_id: SagaArg,
    reason: ReasonOption = None,
    wait: WaitOption = True,
    timeout: TimeoutOption = 300.0,
    api: ApiOption = None,
    token: TokenOption = None,
) -> None:
    """Resume a saga that stopped for an operator (needs_operator), from the step it reached.

    Fix what made it stop first (the saga.stuck alert says which step and why).

    Example: tandem saga resume 0193a5c2-... --reason "disk replaced"
    """
    raise typer.Exit(_control("resume", saga_id, reason, wait, timeout, api, token))


def register(app: typer.Typer) -> None:
    """Add ``history`` and the ``saga`` sub-app to the ``tandem`` app."""
    app.command(epilog=EXIT_CODES)(history)
    app.add_typer(saga_app, name="saga")
