"""``tandem srm``: what a VMware Site Recovery Manager recovery plan runs as Command Steps.

``tandem srm failover --group G`` moves every member of group G to its DR node (identity
``secondary`` unless ``--to``), ``tandem srm failback --group G`` back to ``primary``, each
through the orchestrator's REST API, waiting for the group saga to end. A group already there
succeeds with nothing moved (SRM re-runs plans). Exit 0 on success; otherwise one line on
stderr, which SRM shows: 1 the move failed or timed out, 2 refused (unknown group, a member
with no node of that identity, a bad token...), 3 the API is unreachable.

``tandem srm write-steps`` writes the PowerShell and cmd scripts to add to a recovery plan,
and prints the command lines to give SRM. The scripts pass on tandem's exit code; the API
token stays in a file the scripts name, never in the scripts (see ``srm_steps``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer

from tandem.cli import operate, status_view
from tandem.cli.api_client import ApiClient, ApiError, ApiUnreachable
from tandem.cli.api_models import GroupAccepted, Saga
from tandem.cli.api_target import resolve_api_url, resolve_token
from tandem.cli.options import ApiOption, SrmTokenOption
from tandem.cli.srm_steps import (
    DEFAULT_TIMEOUT_S,
    DR_IDENTITY,
    HOME_IDENTITY,
    GroupOption,
    TimeoutOption,
    ToOption,
    one_line,
    write_steps,
)

srm_app = typer.Typer(
    help="Drive group moves from VMware SRM recovery plans (Command Steps).",
    no_args_is_help=True,
)

DEFAULT_REASON = "VMware SRM recovery plan"

TokenFileOption = Annotated[
    Path | None,
    typer.Option("--token-file", help="Read the API bearer token from this file."),
]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why; recorded with the group saga.")]


# -- moving a group ---------------------------------------------------------------------------


class SrmFailure(Exception):
    """Why the command fails, in one line, and its exit code."""

    def __init__(self, code: int, line: str) -> None:
        super().__init__(line)
        self.code = code


def _token(token: str | None, token_file: Path | None) -> str | None:
    if token_file is None:
        return resolve_token(token)
    if token:
        raise SrmFailure(operate.EXIT_REFUSED, "give --token or --token-file, not both")
    try:
        text = token_file.read_text(encoding="utf-8-sig").strip()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not text"
        raise SrmFailure(
            operate.EXIT_REFUSED, f"cannot read the token file {token_file}: {why}"
        ) from None
    if not text:
        raise SrmFailure(operate.EXIT_REFUSED, f"the token file {token_file} is empty")
    return text


class _Progress:
    """Prints each step of the group saga once, when it ends (SRM keeps the output)."""

    def __init__(self) -> None:
        self.seen: set[tuple[int, str]] = set()

    def __call__(self, saga: Saga) -> None:
        for step in saga.steps:
            if step.state in ("completed", "failed", "compensated"):
                key = (step.index, step.state)
                if key not in self.seen:
                    self.seen.add(key)
                    why = f": {step.reason}" if step.reason else ""
                    typer.echo(f"  {step.name}: {step.state}{why}")


def _api_failure(exc: ApiError, what: str) -> SrmFailure:
    code = operate.EXIT_REFUSED if 400 <= exc.status < 500 else operate.EXIT_FAILED
    return SrmFailure(code, f"{what}: {exc.detail} (HTTP {exc.status})")


def _submit(client: ApiClient, group: str, to: str, reason: str) -> GroupAccepted:
    try:
        return client.group_switchover(group, reason, to=to)
    except ApiError as exc:
        raise _api_failure(exc, f"group {group} refused") from None


def _wait(client: ApiClient, group: str, saga_id: str, timeout_s: float) -> Saga:
    try:
        result = operate.wait_for_saga(
            client.saga,
            saga_id,
            timeout_s,
            sleep=operate.sleep,
            clock=operate.clock,
            on_update=_Progress(),
        )
    except ApiError as exc:
        raise _api_failure(exc, f"group {group}: lost track of saga {saga_id}") from None
    saga = result.saga
    if result.timed_out or saga is None:
        where = f" ({status_view.describe_progress(saga)})" if saga else ""
        last = f"; last error: {result.error}" if result.error else ""
        raise SrmFailure(
            operate.EXIT_FAILED,
            f"group {group}: timed out after {timeout_s:g} s waiting for saga {saga_id}"
            f"{where}{last}; it may still finish",
        )
    if saga.state != "completed":
        how = "needs an operator" if saga.state == "needs_operator" else "failed"
        raise SrmFailure(
            operate.EXIT_FAILED, f"group {group} {how}: {saga.reason or 'no reason given'}"
        )
    return saga


def move_group(
    group: str,
    to: str,
    *,
    api: str | None,
    token: str | None,
    token_file: Path | None,
    timeout_s: float,
    reason: str,
) -> None:
    """Move ``group`` to its ``to`` nodes and wait; SrmFailure says why not."""
    url = resolve_api_url(api)
    bearer = _token(token, token_file)
    try:
        with operate.client_factory(url, bearer, operate.HTTP_TIMEOUT_S) as client:
            accepted = _submit(client, group, to, reason)
            there = f"; already there: {', '.join(accepted.skipped)}" if accepted.skipped else ""
            typer.echo(f"group {group} to {to}: saga {accepted.saga_id} accepted{there}")
            saga = _wait(client, group, accepted.saga_id, timeout_s)
    except ApiUnreachable as exc:
        raise SrmFailure(
            operate.EXIT_UNREACHABLE,
            f"group {group}: cannot reach the Tandem API at {url}: {exc.reason}",
        ) from None
    skipped = [s for s in saga.steps if ": skipped: " in s.reason]
    moved = len(saga.steps) - len(skipped)
    typer.echo(
        f"group {group} is on its {to} nodes: {moved} member(s) moved, {len(skipped)} already there"
    )


def _run(
    action: str,
    group: str,
    to: str,
    api: str | None,
    token: str | None,
    token_file: Path | None,
    timeout_s: float,
    reason: str,
) -> NoReturn:
    """What ``failover`` and ``failback`` both do: move the group, exit with the outcome."""
    try:
        move_group(
            group,
            to,
            api=api,
            token=token,
            token_file=token_file,
            timeout_s=timeout_s,
            reason=reason,
        )
    except SrmFailure as exc:
        typer.echo(one_line(f"tandem srm {action}: {exc}"), err=True)
        raise typer.Exit(exc.code) from None
    except KeyboardInterrupt:
        typer.echo(f"tandem srm {action}: group {group}: interrupted", err=True)
        raise typer.Exit(operate.EXIT_INTERRUPTED) from None
    raise typer.Exit(operate.EXIT_OK)


@srm_app.command()
def failover(
    group: GroupOption,
    to: ToOption = DR_IDENTITY,
    api: ApiOption = None,
    token: SrmTokenOption = None,
    token_file: TokenFileOption = None,
    timeout: TimeoutOption = DEFAULT_TIMEOUT_S,
    reason: ReasonOption = DEFAULT_REASON,
) -> None:
    """Move every member of the group to its DR node (a planned group switchover)."""
    _run("failover", group, to, api, token, token_file, timeout, reason)


@srm_app.command()
def failback(
    group: GroupOption,
    api: ApiOption = None,
    token: SrmTokenOption = None,
    token_file: TokenFileOption = None,
    timeout: TimeoutOption = DEFAULT_TIMEOUT_S,
    reason: ReasonOption = DEFAULT_REASON,
) -> None:
    """Move every member of the group back to its primary node."""
    _run("failback", group, HOME_IDENTITY, api, token, token_file, timeout, reason)


# The Command Step scripts: see srm_steps.
srm_app.command("write-steps")(write_steps)
