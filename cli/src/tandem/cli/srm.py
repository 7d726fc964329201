"""``tandem srm``: what a VMware Site Recovery Manager recovery plan runs as Command Steps.

``tandem srm failover --group G`` moves every member of group G to its DR node (identity
``secondary`` unless ``--to``), ``tandem srm failback --group G`` back to ``primary``, each
through the orchestrator's REST API, waiting for the group saga to end. A group already there
succeeds with nothing moved (SRM re-runs plans). Exit 0 on success; otherwise one line on
stderr, which SRM shows: 1 the move failed or timed out, 2 refused (unknown group, a member
with no node of that identity, a bad token...), 3 the API is unreachable.

``tandem srm write-steps`` writes the PowerShell and cmd scripts to add to a recovery plan,
and prints the command lines to give SRM. The scripts pass on tandem's exit code; the API
token stays in a file the scripts name, never in the scripts.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import Annotated, Literal

import typer

from tandem.cli import operate
from tandem.cli.api_client import (
    ApiClient,
    ApiError,
    ApiUnreachable,
    GroupAccepted,
    Saga,
    resolve_api_url,
    resolve_token,
)
from tandem.events.names import InvalidNameError, check_name

srm_app = typer.Typer(
    help="Drive group moves from VMware SRM recovery plans (Command Steps).",
    no_args_is_help=True,
)

IDENTITIES = ("primary", "secondary", "tertiary")
DR_IDENTITY = "secondary"
HOME_IDENTITY = "primary"
DEFAULT_TIMEOUT_S = 900.0
CMD_EXE = r"c:\windows\system32\cmd.exe"
POWERSHELL_EXE = r"c:\windows\system32\WindowsPowerShell\v1.0\powershell.exe"
DEFAULT_REASON = "VMware SRM recovery plan"

GroupOption = Annotated[str, typer.Option("--group", help="The Tandem group to move.")]
ApiOption = Annotated[
    str | None,
    typer.Option(
        "--api",
        help="Orchestrator API URL (default: TANDEM_API_URL, a running `tandem up`, "
        "or http://127.0.0.1:8700).",
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option("--token", help="API bearer token (default: TANDEM_API_TOKEN)."),
]
TokenFileOption = Annotated[
    Path | None,
    typer.Option("--token-file", help="Read the API bearer token from this file."),
]
TimeoutOption = Annotated[
    float, typer.Option("--timeout", help="Give up waiting after this many seconds.", min=1)
]
ReasonOption = Annotated[str, typer.Option("--reason", help="Why; recorded with the group saga.")]


def _identity(value: str) -> str:
    if value not in IDENTITIES:
        raise typer.BadParameter(f"use one of {', '.join(IDENTITIES)}")
    return value


ToOption = Annotated[
    str,
    typer.Option(
        "--to",
        callback=_identity,
        help="The identity of the DR nodes (primary, secondary, tertiary).",
    ),
]


# -- moving a group ---------------------------------------------------------------------------


class SrmFailure(Exception):
    """Why the command fails, in one line, and its exit code."""

    def __init__(self, code: int, line: str) -> None:
        super().__init__(line)
        self.code = code


def _one_line(text: str) -> str:
    return " ".join(text.split())


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
        where = f" ({operate.describe_progress(saga)})" if saga else ""
        last = f"; last error: {result.error}" if result.error else ""
        raise SrmFailure(
            operate.EXIT_FAILED,
            f"group {group}: timed out after {timeout_s:g} s waiting for saga {saga_id}"
            f"{where}{last}; it may still finish",
        )
    if saga.state != "completed":
        raise SrmFailure(
            operate.EXIT_FAILED, f"group {group} failed: {saga.reason or 'no reason given'}"
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
    *,
    api: str | None,
    token: str | None,
    token_file: Path | None,
    timeout_s: float,
    reason: str,
) -> None:
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
        typer.echo(_one_line(f"tandem srm {action}: {exc}"), err=True)
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
    token: TokenOption = None,
    token_file: TokenFileOption = None,
    timeout: TimeoutOption = DEFAULT_TIMEOUT_S,
    reason: ReasonOption = DEFAULT_REASON,
) -> None:
    """Move every member of the group to its DR node (a planned group switchover)."""
    _run(
        "failover",
        group,
        to,
        api=api,
        token=token,
        token_file=token_file,
        timeout_s=timeout,
        reason=reason,
    )


@srm_app.command()
def failback(
    group: GroupOption,
    api: ApiOption = None,
    token: TokenOption = None,
    token_file: TokenFileOption = None,
    timeout: TimeoutOption = DEFAULT_TIMEOUT_S,
    reason: ReasonOption = DEFAULT_REASON,
) -> None:
    """Move every member of the group back to its primary node."""
    _run(
        "failback",
        group,
        HOME_IDENTITY,
        api=api,
        token=token,
        token_file=token_file,
        timeout_s=timeout,
        reason=reason,
    )


# -- the Command Step scripts -----------------------------------------------------------------

#: What the scripts may quote: printable ASCII without the characters cmd cannot quote.
_SCRIPT_SAFE = re.compile(r"[ -~]+")
_CMD_UNSAFE = set('"%!^')


@dataclass(frozen=True)
class StepOptions:
    """What the scripts pass to ``tandem srm``; paths are the SRM server's."""

    group: str
    to: str = DR_IDENTITY
    tandem: str = "tandem"
    api: str | None = None
    token_file: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S


def check_group_for_files(group: str) -> str:
    """``group`` if it is a safe file-name component (a valid group name), else ValueError."""
    try:
        return check_name(group, "group name")
    except InvalidNameError as exc:
        raise ValueError(f"{exc}; it cannot name a script file") from None


def _check_value(what: str, value: str) -> str:
    if not _SCRIPT_SAFE.fullmatch(value) or _CMD_UNSAFE & set(value):
        raise ValueError(
            f'{what} {value!r} cannot go into the scripts: use printable ASCII without " % ! ^'
        )
    if value.endswith("\\") and what != "--srm-dir":
        # Quoted, a final backslash would escape the closing quote for the Windows C runtime.
        raise ValueError(f"{what} {value!r} cannot go into the scripts: it ends with a backslash")
    return value


def script_names(group: str) -> dict[str, str]:
    """``{"failover.ps1": "tandem-srm-failover-G.ps1", ...}``."""
    return {
        f"{action}.{ext}": f"tandem-srm-{action}-{group}.{ext}"
        for action in ("failover", "failback")
        for ext in ("ps1", "cmd")
    }


def _arguments(options: StepOptions, action: str) -> list[tuple[str, str | None]]:
    """The ``tandem srm <action>`` arguments: (text, None) as is, (flag, value) quoted."""
    args: list[tuple[str, str | None]] = [("srm", None), (action, None)]
    args.append(("--group", options.group))
    if action == "failover":
        args.append(("--to", options.to))
    if options.api:
        args.append(("--api", options.api))
    if options.token_file:
        args.append(("--token-file", options.token_file))
    args.append((f"--timeout {options.timeout_s:g}", None))
    return args


def _ps_quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _cmd_quote(value: str) -> str:
    return f'"{value}"'


def _render(options: StepOptions, action: str, kind: Literal["ps1", "cmd"]) -> str:
    """The script's ``tandem srm <action> ...`` line (PowerShell: with the call operator)."""
    q = _ps_quote if kind == "ps1" else _cmd_quote
    parts = ["& " + q(options.tandem) if kind == "ps1" else q(options.tandem)]
    for text, value in _arguments(options, action):
        parts.append(text if value is None else f"{text} {q(value)}")
    return " ".join(parts)


def command_lines(srm_dir: str, group: str) -> dict[str, str]:
    """The command line to give SRM for each script, by the same keys as ``script_names``."""
    lines = {}
    for key, name in script_names(group).items():
        path = str(PureWindowsPath(srm_dir) / name)
        quoted = f'"{path}"' if " " in path else path
        if key.endswith(".cmd"):
            lines[key] = f"{CMD_EXE} /c {quoted}"
        else:
            lines[key] = (
                f"{POWERSHELL_EXE} -NoProfile -NonInteractive -ExecutionPolicy Bypass "
                f"-File {quoted}"
            )
    return lines


def _header(comment: str, options: StepOptions, action: str, srm_line: str) -> list[str]:
    where = options.to if action == "failover" else HOME_IDENTITY
    lines = [
        f"Tandem: VMware SRM recovery plan Command Step: {action} of group {options.group}"
        f" to its {where} nodes.",
        "Written by `tandem srm write-steps`. Add it to the recovery plan as:",
        f"  {srm_line}",
        "Exit code 0: done (or already there); otherwise the step fails with tandem's "
        "one-line reason.",
    ]
    if options.token_file:
        lines.append(f"The API token is read from {options.token_file} at run time.")
    else:
        lines.append("The API token comes from TANDEM_API_TOKEN of the account SRM runs as.")
    return [f"{comment} {line}" for line in lines]


def render_scripts(options: StepOptions, srm_dir: str) -> dict[str, str]:
    """File name -> content (CRLF line endings) of the four scripts."""
    check_group_for_files(options.group)
    if options.to not in IDENTITIES:
        raise ValueError(f"--to {options.to!r}: use one of {', '.join(IDENTITIES)}")
    for what, value in (
        ("--tandem", options.tandem),
        ("--api", options.api),
        ("--token-file", options.token_file),
        ("--srm-dir", srm_dir),
    ):
        if value is not None:
            _check_value(what, value)
    names = script_names(options.group)
    srm_lines = command_lines(srm_dir, options.group)
    out = {}
    for action in ("failover", "failback"):
        ps1 = [
            *_header("#", options, action, srm_lines[f"{action}.ps1"]),
            "$global:LASTEXITCODE = 1  # stays 1 if tandem cannot be started",
            "try {",
            f"    {_render(options, action, 'ps1')}",
            "} catch {",
            '    [Console]::Error.WriteLine("tandem srm: cannot run tandem: "'
            " + $_.Exception.Message)",
            "}",
            "exit $LASTEXITCODE",
        ]
        cmd = [
            "@echo off",
            *_header("rem", options, action, srm_lines[f"{action}.cmd"]),
            "setlocal DisableDelayedExpansion",
            _render(options, action, "cmd"),
            "exit /b %ERRORLEVEL%",
        ]
        out[names[f"{action}.ps1"]] = "\r\n".join(ps1) + "\r\n"
        out[names[f"{action}.cmd"]] = "\r\n".join(cmd) + "\r\n"
    return out


@srm_app.command("write-steps")
def write_steps(
    group: GroupOption,
    directory: Annotated[
        Path, typer.Option("--dir", help="Write the scripts into this folder (created).")
    ],
    api: Annotated[
        str | None,
        typer.Option(
            "--api",
            help="Orchestrator API URL the scripts use (default: none: "
            "TANDEM_API_URL of the account SRM runs as).",
        ),
    ] = None,
    token_file: Annotated[
        str | None,
        typer.Option(
            "--token-file",
            help="Path, on the SRM server, of the file holding the "
            "API token (the token is never written into the scripts).",
        ),
    ] = None,
    to: ToOption = DR_IDENTITY,
    tandem: Annotated[
        str, typer.Option("--tandem", help="The tandem executable on the SRM server.")
    ] = "tandem",
    srm_dir: Annotated[
        str | None,
        typer.Option(
            "--srm-dir", help="Where the scripts will be on the SRM server (default: --dir)."
        ),
    ] = None,
    timeout: TimeoutOption = DEFAULT_TIMEOUT_S,
) -> None:
    """Write the SRM Command Step scripts (PowerShell and cmd) for failover and failback."""
    options = StepOptions(group, to, tandem, api, token_file, timeout)
    where = srm_dir if srm_dir is not None else str(directory.absolute())
    try:
        scripts = render_scripts(options, where)
    except ValueError as exc:
        typer.echo(_one_line(f"tandem srm write-steps: {exc}"), err=True)
        raise typer.Exit(operate.EXIT_REFUSED) from None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in scripts.items():
            (directory / name).write_bytes(text.encode("ascii"))
    except OSError as exc:
        typer.echo(f"tandem srm write-steps: cannot write into {directory}: {exc}", err=True)
        raise typer.Exit(operate.EXIT_FAILED) from None
    for name in scripts:
        typer.echo(f"wrote {directory / name}")
    lines = command_lines(where, group)
    typer.echo("")
    typer.echo("SRM recovery plan Command Steps (run on the SRM server):")
    typer.echo(f"  failover: {lines['failover.cmd']}")
    typer.echo(f"  failback: {lines['failback.cmd']}")
    typer.echo("or with PowerShell:")
    typer.echo(f"  failover: {lines['failover.ps1']}")
    typer.echo(f"  failback: {lines['failback.ps1']}")
    typer.echo(f"Give each step a timeout above {timeout:g} s (SRM's default is 300 s).")
    if srm_dir is None and os.name != "nt":
        typer.echo(f"These assume the scripts are in {where} on the SRM server: give --srm-dir.")
    if token_file is None:
        typer.echo("No --token-file: the scripts rely on TANDEM_API_TOKEN of SRM's account.")
