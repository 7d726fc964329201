"""``tandem reinstate``, ``tandem cleanup`` and ``tandem app stop|start|restart``: an
operator's control of nodes, through the orchestrator's REST API.

- ``reinstate C N``: a node left behind (the old Active of an automatic switchover, or a
  Passive out of sync) is verified and synchronized as a Passive of the current Active, and
  replication resumes.
- ``cleanup C [N] --reason R``: clears a stale fence, a node awaiting an operator, the open
  ``saga.stuck`` / ``fence.failed`` alerts, and resets the restart ladders.
- ``app stop|start|restart C [APP]``: on the Active; an operator's stop is not a failure (no
  rule restarts it) until a start.

Exit codes as ``operate``: 0 done, 1 failed, 2 refused (bad input, unknown cluster, node or
application, the state does not allow it), 3 the API is unreachable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer
from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console

from tandem.cli import operate
from tandem.cli.api_client import API_PREFIX, ApiClient, ApiError, ApiUnreachable
from tandem.cli.api_target import resolve_api_url, resolve_token
from tandem.cli.options import ApiOption, TokenOption

EXIT_CODES = (
    "Exit codes: 0 done, 1 failed, 2 refused (the reason is printed), 3 the API is unreachable."
)
#: A reinstate verifies the node's whole folder; an application's stop and start may be slow.
HTTP_TIMEOUT_S = 300.0

app_app = typer.Typer(
    help="Stop, start or restart the applications on a cluster's Active.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)

console = Console()
err = Console(stderr=True)


class _Answer(BaseModel):
    model_config = ConfigDict(extra="ignore")
    message: str = ""


class ReinstateAnswer(_Answer):
    source: str = ""
    replication: str = ""
    verify: str = ""


class CleanupAnswer(_Answer):
    unfenced: list[str] = Field(default_factory=list)
    released: list[str] = Field(default_factory=list)
    alerts: list[str] = Field(default_factory=list)
    ladders_reset: list[str] = Field(default_factory=list)
    kept: dict[str, str] = Field(default_factory=dict)


class AppControlAnswer(_Answer):
    node: str = ""
    ok: bool = True
    detail: str = ""


def _seg(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")


def _run(
    what: str,
    call: Callable[[ApiClient], tuple[str, int]],
    api: str | None,
    token: str | None,
) -> int:
    try:
        client = operate.client_factory(resolve_api_url(api), resolve_token(token), HTTP_TIMEOUT_S)
        with client:
            try:
                text, code = call(client)
            except ApiError as exc:
                return operate.report_api_error(err, exc, f"{what} refused")
    except ApiUnreachable as exc:
        return operate.report_unreachable(err, exc)
    (console if code == operate.EXIT_OK else err).print(
        text, markup=False, highlight=False, soft_wrap=True
    )
    return code


def _post(client: ApiClient, kind: type[Any], path: str, body: dict[str, Any]) -> Any:
    return client._post_as(kind, f"{API_PREFIX}{path}", body)


ClusterArg = Annotated[str, typer.Argument(help="The cluster.")]
NodeArg = Annotated[str, typer.Argument(help="The node.")]
ReasonOption = Annotated[
    str | None, typer.Option("--reason", help="Why; recorded with the operation.")
]


def reinstate(
    cluster: ClusterArg,
    node: NodeArg,
    reason: ReasonOption = None,
    api: ApiOption = None,
    token: TokenOption = None,
) -> None:
    """Bring a node left behind back as a verified, synchronized Passive.

    The old Active of an automatic switchover stays stopped for an operator: this resumes
    its replication from the current Active and verifies its copy (refused for the Active
    itself, or a node that is not alive).

    Example: tandem reinstate demo primary --reason "disk checked"
    """

    def call(client: ApiClient) -> tuple[str, int]:
        path = f"/clusters/{_seg(cluster)}/nodes/{_seg(node)}/reinstate"
        body = {"reason": reason or operate.DEFAULT_REASON}
        a: ReinstateAnswer = _post(client, ReinstateAnswer, path, body)
        lines = [a.message, f"  replication: {a.replication}", f"  verify: {a.verify}"]
        return "\n".join(lines), operate.EXIT_OK

    raise typer.Exit(_run(f"reinstate of {cluster}/{node}", call, api, token))


def cleanup(
    cluster: ClusterArg,
    node: Annotated[str | None, typer.Argument(help="One node (default: every node).")] = None,
    reason: Annotated[
        str, typer.Option("--reason", help="Why (required); recorded with each change.")
    ] = "",
    api: ApiOption = None,
    token: TokenOption = None,
) -> None:
    """Clear what waits for an operator, and reset the restart ladders.

    Clears a stale fenced state (never one the node itself still holds), a node awaiting an
    operator, the open saga.stuck / fence.failed alerts; the answer lists what was cleared
    and what was kept, and why.

    Example: tandem cleanup demo primary --reason "fence checked by hand"
    """
    if not reason.strip():
        err.print("give --reason: why this is cleared is recorded with it", markup=False)
        raise typer.Exit(operate.EXIT_REFUSED)

    def call(client: ApiClient) -> tuple[str, int]:
        body = {"node": node, "reason": reason}
        a: CleanupAnswer = _post(client, CleanupAnswer, f"/clusters/{_seg(cluster)}/cleanup", body)
        lines = [a.message] + [f"  kept {name}: {why}" for name, why in a.kept.items()]
        return "\n".join(lines), operate.EXIT_OK

    raise typer.Exit(_run(f"cleanup of {cluster}", call, api, token))


AppArg = Annotated[
    str | None, typer.Argument(help="One application (default: every one of the Active).")
]


def _apps(
    action: str,
    cluster: str,
    name: str | None,
    reason: str | None,
    api: str | None,
    token: str | None,
) -> int:
    def call(client: ApiClient) -> tuple[str, int]:
        body = {"app": name, "reason": reason or operate.DEFAULT_REASON}
        path = f"/clusters/{_seg(cluster)}/apps/{action}"
        a: AppControlAnswer = _post(client, AppControlAnswer, path, body)
        code = operate.EXIT_OK if a.ok else operate.EXIT_FAILED
        return f"{a.message}: {a.detail}" if a.detail else a.message, code

    return _run(f"{action} of {name or 'the applications'} of {cluster}", call, api, token)


@app_app.command("stop", epilog=EXIT_CODES)
def stop(
    cluster: ClusterArg,
    name: AppArg = None,
    reason: ReasonOption = None,
    api: ApiOption = None,
    token: TokenOption = None,
) -> None:
    """Stop applications on the Active; no health rule restarts them until a start.

    Example: tandem app stop demo demo-web --reason "config change"
    """
    raise typer.Exit(_apps("stop", cluster, name, reason, api, token))


@app_app.command("start", epilog=EXIT_CODES)
def start(
    cluster: ClusterArg,
    name: AppArg = None,
    reason: ReasonOption = None,
    api: ApiOption = None,
    token: TokenOption = None,
) -> None:
    """Start applications on the Active (the health rules watch them again).

    Example: tandem app start demo
    """
    raise typer.Exit(_apps("start", cluster, name, reason, api, token))


@app_app.command("restart", epilog=EXIT_CODES)
def restart(
    cluster: ClusterArg,
    name: AppArg = None,
    reason: ReasonOption = None,
    api: ApiOption = None,
    token: TokenOption = None,
) -> None:
    """Restart applications on the Active: stop, then start.

    Example: tandem app restart demo demo-web
    """
    raise typer.Exit(_apps("restart", cluster, name, reason, api, token))


def register(app: typer.Typer) -> None:
    """Add ``reinstate``, ``cleanup`` and the ``app`` sub-app to the ``tandem`` app."""
    app.command(epilog=EXIT_CODES)(reinstate)
    app.command(epilog=EXIT_CODES)(cleanup)
    app.add_typer(app_app, name="app")
