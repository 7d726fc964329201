"""``tandem dns reconcile [CLUSTER]``: ask the dns_updater, through the orchestrator's REST
API, to check now that each DR name points at its cluster's Active and to move the ones
that do not; then show what it answered (``DnsReconcileCompleted``, read from
``/api/v1/events`` after the request).

Exit codes as the other operator commands: 0 every name points at its Active, 1 a name could
not be repaired or no answer came in time, 2 refused (unknown cluster, a viewer token...),
3 the API is unreachable.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tandem.cli import operate
from tandem.cli.api_client import ApiClient, ApiError, ApiUnreachable
from tandem.cli.api_models import EventRecord
from tandem.cli.options import ApiOption, TokenOption

dns_app = typer.Typer(help="Look after the DR names the dns_updater moves.", no_args_is_help=True)

DEFAULT_REASON = "requested with the tandem CLI"
ANSWER = "DnsReconcileCompleted"
_OUTCOME_STYLE = {"ok": "green", "fixed": "yellow", "failed": "bold red"}

console = Console()
err = Console(stderr=True)


def wait_for_answer(client: ApiClient, request_id: str, after: int, timeout_s: float) -> Any:
    """The payload of the dns_updater's answer to ``request_id``, or None at the deadline."""
    deadline = operate.clock() + timeout_s
    last_error = ""
    while True:
        try:
            events: list[EventRecord] = client.events(after)
        except ApiUnreachable as exc:
            events, last_error = [], str(exc)
        except ApiError as exc:
            if exc.status < 500:
                raise
            events, last_error = [], f"{exc.status} {exc.detail}"
        for event in events:
            after = max(after, event.seq)
            if event.type == ANSWER and event.correlation_id == request_id:
                return event.payload
        remaining = deadline - operate.clock()
        if remaining <= 0:
            if last_error:
                err.print(f"last error: {last_error}", markup=False)
            return None
        if not events:
            operate.sleep(min(operate.POLL_INTERVAL_S, remaining))


def answer_table(names: list[dict[str, Any]]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for column in ("cluster", "name", "outcome", "points to"):
        table.add_column(column, no_wrap=True)
    table.add_column("why", overflow="fold", min_width=8)
    for n in names:
        outcome = str(n.get("outcome", "?"))
        style = _OUTCOME_STYLE.get(outcome, "dim")
        target = n.get("active_node") or "-"
        addresses = ", ".join(n.get("addresses") or [])
        points = f"{target} ({addresses})" if addresses else str(target)
        table.add_row(
            escape(str(n.get("cluster", ""))),
            escape(str(n.get("name", ""))),
            f"[{style}]{escape(outcome)}[/]",
            escape(points),
            escape(str(n.get("reason", ""))),
        )
    return table


def run_reconcile(
    cluster: str | None,
    *,
    api: str | None,
    token: str | None,
    reason: str | None,
    wait: bool,
    timeout_s: float,
) -> int:
    what = f"DNS reconcile of {cluster or 'every cluster'}"
    try:
        with operate._client(api, token) as client:
            accepted = client.dns_reconcile(cluster, reason or DEFAULT_REASON)
            console.print(f"{escape(what)}: requested ({escape(accepted.request_id)})")
            if not wait:
                return operate.EXIT_OK
            with console.status(escape(f"{what}: waiting for the dns_updater"), spinner="dots"):
                answer = wait_for_answer(client, accepted.request_id, accepted.seq, timeout_s)
    except ApiUnreachable as exc:
        return operate.report_unreachable(err, exc)
    except ApiError as exc:
        return operate.report_api_error(err, exc, what)
    except KeyboardInterrupt:
        err.print("stopped waiting; the dns_updater goes on", markup=False)
        return operate.EXIT_INTERRUPTED
    if answer is None:
        err.print(
            f"[red]{escape(what)}: no answer from the dns_updater within {timeout_s:g} s "
            "(is it running?)[/]"
        )
        return operate.EXIT_FAILED
    names: list[dict[str, Any]] = list(answer.get("names") or [])
    if not names:
        console.print(f"the dns_updater has no DR name for {escape(cluster or 'any cluster')}")
        return operate.EXIT_OK
    console.print(answer_table(names))
    failed = [n for n in names if n.get("outcome") == "failed"]
    fixed = [n for n in names if n.get("outcome") == "fixed"]
    if failed:
        err.print(f"[red]{len(failed)} of {len(names)} name(s) do not point at their Active[/]")
        return operate.EXIT_FAILED
    summary = f"{len(names)} name(s) point at their Active"
    console.print(f"[green]{summary}[/]" + (f" ({len(fixed)} repaired)" if fixed else ""))
    return operate.EXIT_OK


@dns_app.command("reconcile")
def reconcile(
    cluster: Annotated[
        str | None, typer.Argument(help="The cluster (default: every cluster).")
    ] = None,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why; recorded with the request.")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait for the dns_updater's answer.")
    ] = True,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Stop waiting after this many seconds.", min=0)
    ] = 120.0,
    api: ApiOption = None,
    token: TokenOption = None,
) -> None:
    """Check that each DR name points at its cluster's Active now, and move it if not."""
    raise typer.Exit(
        run_reconcile(cluster, api=api, token=token, reason=reason, wait=wait, timeout_s=timeout)
    )
