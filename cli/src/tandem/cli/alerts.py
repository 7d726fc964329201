"""``tandem alerts [list] | ack | silence | silences | unsilence``: what fires, an operator's
acknowledgement, and silences, through the orchestrator's REST API (issue 19).

An alert is raised, perhaps acknowledged, then cleared when its condition ends; it is known by
its fingerprint (code + cluster + node + subject). A silence mutes the notifications of the
alerts it matches until it ends; they fire all the same.

Exit codes as ``operate``: 0 done, 2 refused (bad input, unknown alert or silence, already
cleared...), 3 the API is unreachable.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote, urlencode

import typer
from pydantic import BaseModel, ConfigDict, Field
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from tandem.cli import operate
from tandem.cli.api_client import ApiClient, ApiError, ApiUnreachable
from tandem.cli.maintenance import parse_duration
from tandem.cli.options import ApiOption, TokenOption

EXIT_CODES = "Exit codes: 0 done, 2 refused (the reason is printed), 3 the API is unreachable."
#: The labels a silence matches on (the API refuses others, naming them).
LABELS = ("code", "cluster", "node", "subject", "severity")

alerts_app = typer.Typer(
    help="Alerts: what fires (list), acknowledge one, silence their notifications.\n\n"
    "Examples: tandem alerts --cluster demo; tandem alerts ack 3f2a9c0d1e4b5a6f; "
    "tandem alerts silence --match code=rule.web-down --match cluster=demo --for 2h",
    context_settings={"help_option_names": ["-h", "--help"]},
)

console = Console()
err = Console(stderr=True)


class Alert(BaseModel):
    """One entry of ``GET /api/v1/alerts`` (fields a newer orchestrator adds are ignored)."""

    model_config = ConfigDict(frozen=True, extra="ignore")
    fingerprint: str
    cluster: str = ""
    node: str = ""
    code: str
    subject: str = ""
    severity: str = ""
    message: str = ""
    state: str = ""
    raised_at: datetime
    last_raised_at: datetime | None = None
    count: int = 1
    acknowledged_by: str = ""
    cleared_at: datetime | None = None
    cleared_reason: str = ""
    silenced_by: list[str] = Field(default_factory=list)


class Silence(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")
    id: str
    matchers: dict[str, str]
    ends_at: datetime
    by: str = ""
    comment: str = ""
    state: str = ""
    muting: list[str] = Field(default_factory=list)


_SEVERITY = {"critical": "bold red", "warning": "yellow", "info": "cyan"}
_STATE = {"firing": "red", "acknowledged": "yellow", "cleared": "green"}


def _local(at: datetime | None) -> str:
    return f"{at.astimezone():%Y-%m-%d %H:%M:%S}" if at is not None else "-"


def _styled(text: str, style: str) -> str:
    return f"[{style}]{escape(text)}[/]" if style else escape(text)


def alerts_table(alerts: list[Alert]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for column in ("fingerprint", "cluster/node", "code", "severity", "state", "since", "count"):
        table.add_column(column, no_wrap=True)
    table.add_column("message", overflow="fold")
    for a in alerts:
        state = a.state
        if a.state == "acknowledged" and a.acknowledged_by:
            state += f" by {a.acknowledged_by}"
        if a.silenced_by:
            state += " (silenced)"
        message = a.message
        if a.state == "cleared":
            message = f"cleared {_local(a.cleared_at)}: {a.cleared_reason} (was: {a.message})"
        table.add_row(
            escape(a.fingerprint),
            escape(f"{a.cluster}/{a.node}"),
            escape(a.code + (f" [{a.subject}]" if a.subject else "")),
            _styled(a.severity, _SEVERITY.get(a.severity, "")),
            _styled(state, _STATE.get(a.state, "")),
            _local(a.raised_at),
            str(a.count),
            escape(message),
        )
    return table


def silences_table(silences: list[Silence]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for column in ("id", "matchers", "until", "state", "mutes", "by"):
        table.add_column(column, no_wrap=column != "matchers", overflow="fold")
    table.add_column("comment", overflow="fold")
    for s in silences:
        table.add_row(
            escape(s.id),
            escape(", ".join(f"{k}={v}" for k, v in s.matchers.items())),
            _local(s.ends_at),
            escape(s.state),
            str(len(s.muting)),
            escape(s.by),
            escape(s.comment),
        )
    return table


def _read(path: str, kind: Any, as_json: bool, api: str | None, token: str | None) -> Any:
    """The answer of ``GET path`` as ``kind`` (None once printed as JSON); an int exit code
    when it failed."""
    try:
        with operate._client(api, token) as client:
            if as_json:
                console.print_json(json.dumps(client.read(Any, path)))
                return None
            return client.read(kind, path)
    except ApiUnreachable as exc:
        return operate.report_unreachable(err, exc)
    except ApiError as exc:
        return operate.report_api_error(err, exc, "alerts")


def run_list(
    cluster: str | None, state: str, as_json: bool, api: str | None, token: str | None
) -> int:
    query: dict[str, Any] = {"state": state}
    if cluster:
        query["cluster"] = cluster
    found = _read(f"/alerts?{urlencode(query)}", list[Alert], as_json, api, token)
    if found is None or isinstance(found, int):
        return found or operate.EXIT_OK
    if not found:
        where = f" on {cluster}" if cluster else ""
        console.print(f"no {state} alert{where}", markup=False)
        return operate.EXIT_OK
    console.print(alerts_table(found))
    return operate.EXIT_OK


ClusterOption = Annotated[str | None, typer.Option("--cluster", "-c", help="Only this cluster's.")]
StateOption = Annotated[
    str,
    typer.Option(
        "--state",
        help="firing (every one still firing, acknowledged ones too), acknowledged or cleared.",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="The API's JSON, as it came.")]


@alerts_app.callback(invoke_without_command=True, epilog=EXIT_CODES)
def alerts(
    ctx: typer.Context,
    cluster: ClusterOption = None,
    state: StateOption = "firing",
    as_json: JsonOption = False,
    api: ApiOption = None,
    token: TokenOption = None,
) -> None:
    """Alerts: without a command, the firing ones (as `tandem alerts list`).

    Example: tandem alerts --cluster demo
    """
    if ctx.invoked_subcommand is None:
        raise typer.Exit(run_list(cluster, state, as_json, api, token))


@alerts_app.command("list", epilog=EXIT_CODES)
def list_(
    cluster: ClusterOption = None,
    state: StateOption = "firing",
    as_json: JsonOption = False,
    api: ApiOption = None,
    token: TokenOption = None,
) -> None:
    """The alerts, newest first: fingerprint, where, code, severity, state, since, count, why.

    Example: tandem alerts list --state cleared --cluster demo
    """
    raise typer.Exit(run_list(cluster, state, as_json, api, token))


CommentOption = Annotated[
    str | None, typer.Option("--comment", help="Why; recorded with the operation.")
]


@alerts_app.command("ack", epilog=EXIT_CODES)
def ack(
    fingerprint: Annotated[str, typer.Argument(help="The alert's fingerprint (tandem alerts).")],
    comment: CommentOption = None,
    api: ApiOption = None,
    token: TokenOption = None,
) -> None:
    """Acknowledge a firing alert: its notifications stop repeating; it fires until cleared.

    Example: tandem alerts ack 3f2a9c0d1e4b5a6f --comment "disk being replaced"
    """

    def call(client: ApiClient) -> str:
        path = f"/alerts/{quote(fingerprint, safe='')}/ack"
        a = client.send(Alert, path, {"comment": comment or ""})
        return f"alert {a.fingerprint} ({a.code} on {a.cluster}/{a.node}) acknowledged by " + (
            f"{a.acknowledged_by}; it fires until its condition ends"
        )

    raise typer.Exit(operate.run_change(console, err, f"ack of {fingerprint}", call, api, token))


def parse_matchers(pairs: list[str]) -> dict[str, str]:
    """``["code=rule.web", "cluster=demo"]`` -> a dict; ValueError naming the bad one."""
    matchers: dict[str, str] = {}
    for pair in pairs:
        label, sep, value = pair.partition("=")
        label, value = label.strip(), value.strip()
        if not sep or not label or not value:
            raise ValueError(f"--match {pair!r}: give LABEL=VALUE (e.g. code=rule.web)")
        if label not in LABELS:
            raise ValueError(f"--match {pair!r}: unknown label {label!r}; use {', '.join(LABELS)}")
        matchers[label] = value
    return matchers


@alerts_app.command("silence", epilog=EXIT_CODES)
def silence(
    match: Annotated[
        list[str],
        typer.Option(
            "--match", "-m", help=f"LABEL=VALUE, all must match ('*' any); {', '.join(LABELS)}."
        ),
    ],
    for_: Annotated[str, typer.Option("--for", help="How long (90s, 30m, 2h, 1d).")],
    comment: CommentOption = None,
    api: ApiOption = None,
    token: TokenOption = None,
) -> None:
    """Mute the notifications of the alerts that match, until the silence ends.

    The alerts still fire and show in `tandem alerts` (marked silenced).

    Example: tandem alerts silence --match code=rule.web-down --match cluster=demo --for 2h
    """
    try:
        matchers = parse_matchers(match)
        for_s = parse_duration(for_)
    except ValueError as exc:
        err.print(f"[red]{escape(str(exc))}[/]")
        raise typer.Exit(operate.EXIT_REFUSED) from None

    def call(client: ApiClient) -> str:
        body = {"matchers": matchers, "for_s": for_s, "comment": comment or ""}
        s = client.send(Silence, "/silences", body)
        what = ", ".join(f"{k}={v}" for k, v in s.matchers.items())
        return (
            f"silence {s.id} ({what}) until {_local(s.ends_at)}; mutes {len(s.muting)} alerts now"
        )

    raise typer.Exit(operate.run_change(console, err, "silence", call, api, token))


@alerts_app.command("silences", epilog=EXIT_CODES)
def silences(
    all_: Annotated[bool, typer.Option("--all", help="Also the ended ones still kept.")] = False,
    as_json: JsonOption = False,
    api: ApiOption = None,
    token: TokenOption = None,
) -> None:
    """The silences in force, newest first: what they match, until when, how many they mute.

    Example: tandem alerts silences
    """
    path = "/silences?all=true" if all_ else "/silences"
    found = _read(path, list[Silence], as_json, api, token)
    if found is None or isinstance(found, int):
        raise typer.Exit(found or operate.EXIT_OK)
    if not found:
        console.print("no silence in force", markup=False)
    else:
        console.print(silences_table(found))
    raise typer.Exit(operate.EXIT_OK)


@alerts_app.command("unsilence", epilog=EXIT_CODES)
def unsilence(
    silence_id: Annotated[str, typer.Argument(help="The silence's id (tandem alerts silences).")],
    api: ApiOption = None,
    token: TokenOption = None,
) -> None:
    """End a silence before its time.

    Example: tandem alerts unsilence 0193a5c2-...
    """

    def call(client: ApiClient) -> str:
        s = client.remove(Silence, f"/silences/{quote(silence_id, safe='')}")
        return f"silence {s.id} removed: the alerts it matched notify again"

    raise typer.Exit(
        operate.run_change(console, err, f"unsilence of {silence_id}", call, api, token)
    )


def register(app: typer.Typer) -> None:
    """Add the ``alerts`` sub-app to the ``tandem`` app."""
    app.add_typer(alerts_app, name="alerts")
