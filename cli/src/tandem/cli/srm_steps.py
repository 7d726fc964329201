"""``tandem srm write-steps``: the PowerShell and cmd scripts to add to a VMware SRM recovery
plan as Command Steps, and the command lines to give SRM. The scripts run ``tandem srm
failover`` / ``failback`` and pass on tandem's exit code; the API token stays in a file the
scripts name, never in the scripts.

Also what both ``tandem srm`` modules share: the node identities a group moves between and the
options ``failover``, ``failback`` and ``write-steps`` all take (``srm.py`` imports them).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import Annotated, Literal

import typer

from tandem.cli import operate
from tandem.events.names import InvalidNameError, check_name

IDENTITIES = ("primary", "secondary", "tertiary")
DR_IDENTITY = "secondary"
HOME_IDENTITY = "primary"
DEFAULT_TIMEOUT_S = 900.0
CMD_EXE = r"c:\windows\system32\cmd.exe"
POWERSHELL_EXE = r"c:\windows\system32\WindowsPowerShell\v1.0\powershell.exe"

GroupOption = Annotated[str, typer.Option("--group", help="The Tandem group to move.")]
TimeoutOption = Annotated[
    float, typer.Option("--timeout", help="Give up waiting after this many seconds.", min=1)
]


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


def one_line(text: str) -> str:
    """``text`` on one line, as SRM shows a failed step's reason."""
    return " ".join(text.split())


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
        typer.echo(one_line(f"tandem srm write-steps: {exc}"), err=True)
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
