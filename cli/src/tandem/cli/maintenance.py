"""``tandem pause`` / ``resume`` and ``tandem node standby`` / ``unstandby``: maintenance,
through the orchestrator's REST API.

A paused cluster gets no automatic failover or switchover (a lost Active is recommended for
failover, for ``tandem failover --confirm``); an operator's switchover and failover stay
allowed. A node in standby is never chosen as the target of a switchover or failover.

Exit codes as ``operate``: 0 done, 2 refused (bad input, unknown cluster or node, already
paused, not paused...), 3 the API is unreachable.
"""

from __future__ import annotations

import re
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from tandem.cli import operate
from tandem.cli.api_client import ApiClient
from tandem.cli.api_models import Maintenance
from tandem.cli.options import ApiOption, TokenOption

EXIT_CODES = "Exit codes: 0 done, 2 refused (the reason is printed), 3 the API is unreachable."

node_app = typer.Typer(
    help="Act on one node of a cluster: keep it from being chosen as a target (standby).",
    no_args_is_help=True,
)

console = Console()
err = Console(stderr=True)

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhd])")


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``30m``, ``2h``, ``1h30m``, ``1d`` -> seconds; ValueError else."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", text):
        seconds = float(text)
    else:
        parts = _PART.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"{text!r} is not a duration (e.g. 90s, 30m, 2h, 1h30m, 1d)")
        seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError(f"{text!r}: a duration must be more than 0")
    return seconds


def describe(m: Maintenance) -> str:
    """``paused by alice until 14:30:00 (kernel update)``, in local time."""
    until = f"until {m.until.astimezone():%Y-%m-%d %H:%M:%S}" if m.until else "until resumed"
    why = f" ({m.reason})" if m.reason else ""
    return f"paused by {m.by or 'unknown'} {until}{why}"


ClusterArg = Annotated[str, typer.Argument(help="The cluster.")]
NodeArg = Annotated[str, typer.Argument(help="The node.")]
ReasonOption = Annotated[
    str | None, typer.Option("--reason", help="Why; recorded with the operation.")
]


def pause(
    cluster: ClusterArg,
    for_: Annotated[
        str | None,
        typer.Option("--for", help="How long (90s, 30m, 2h, 1d); default: until resumed."),
    ] = None,
    reason: ReasonOption = None,
    api: ApiOption = None,
    token: TokenOption = None,
) -> None:
    """Pause automatic failover and switchover of a cluster (maintenance).

    While paused, a lost Active is only recommended for failover.

    Confirm it with `tandem failover C --confirm`; an operator's switchover stays allowed.

    Example: tandem pause demo --for 2h --reason "kernel update"
    """
    try:
        for_s = parse_duration(for_) if for_ is not None else None
    except ValueError as exc:
        err.print(f"[red]{escape(str(exc))}[/]")
        raise typer.Exit(operate.EXIT_REFUSED) from None

    def call(client: ApiClient) -> str:
        answer = client.pause(cluster, reason or operate.DEFAULT_REASON, for_s)
        shown = f"{cluster}: {describe(answer.maintenance)}" if answer.maintenance else ""
        return "\n".join(t for t in (shown, answer.message) if t)

    raise typer.Exit(operate.run_change(console, err, f"pause of {cluster}", call, api, token))


def resume(
    cluster: ClusterArg,
    reason: ReasonOption = None,
    api: ApiOption = None,
    token: TokenOption = None,
) -> None:
    """Resume automatic failover and switchover of a paused cluster.

    Example: tandem resume demo --reason "kernel updated"
    """
    raise typer.Exit(
        operate.run_change(
            console,
            err,
            f"resume of {cluster}",
            lambda client: client.resume(cluster, reason or operate.DEFAULT_REASON).message,
            api,
            token,
        )
    )


def _standby(
    cluster: str, node: str, on: bool, reason: str | None, api: str | None, token: str | None
) -> int:
    def call(client: ApiClient) -> str:
        answer = client.standby(cluster, node, on, reason or operate.DEFAULT_REASON)
        return "\n".join(t for t in (answer.message, answer.note and f"note: {answer.note}") if t)

    verb = "standby" if on else "unstandby"
    return operate.run_change(console, err, f"{verb} of {cluster}/{node}", call, api, token)


@node_app.command("standby", epilog=EXIT_CODES)
def standby(
    cluster: ClusterArg,
    node: NodeArg,
    reason: ReasonOption = None,
    api: ApiOption = None,
    token: TokenOption = None,
) -> None:
    """Keep a node from being chosen as the target of a switchover or failover.

    Example: tandem node standby demo secondary --reason "disk replacement"
    """
    raise typer.Exit(_standby(cluster, node, True, reason, api, token))


@node_app.command("unstandby", epilog=EXIT_CODES)
def unstandby(
    cluster: ClusterArg,
    node: NodeArg,
    reason: ReasonOption = None,
    api: ApiOption = None,
    token: TokenOption = None,
) -> None:
    """Let a node in standby be chosen as a target again.

    Example: tandem node unstandby demo secondary
    """
    raise typer.Exit(_standby(cluster, node, False, reason, api, token))


def register(app: typer.Typer) -> None:
    """Add ``pause``, ``resume`` and the ``node`` sub-app to the ``tandem`` app."""
    app.command(epilog=EXIT_CODES)(pause)
    app.command(epilog=EXIT_CODES)(resume)
    app.add_typer(node_app, name="node")
