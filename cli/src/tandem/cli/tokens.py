"""``tandem token new`` / ``tandem token hash``: API tokens for the orchestrator's tokens file.

The file gets ``<role> sha256:<hex>`` (the token's SHA-256), never the token: only the user
it is for ever sees the token, once, on this command's stdout. The format is
``tandem.events.api_tokens``, which the orchestrator checks tokens with.
"""

from __future__ import annotations

import getpass
import sys
from enum import StrEnum
from typing import Annotated

import typer

from tandem.events import api_tokens

token_app = typer.Typer(
    help="Make API tokens for the orchestrator's tokens file (stored there hashed).",
    no_args_is_help=True,
)


class Role(StrEnum):
    viewer = "viewer"
    operator = "operator"
    admin = "admin"


RoleOption = Annotated[
    Role,
    typer.Option(
        "--role",
        help="viewer (read), operator (switchover, failover) or admin.",
        case_sensitive=False,
    ),
]

_WHERE = (
    "Add the line to the orchestrator's tokens file (TANDEM_ORCHESTRATOR_TOKENS_FILE, "
    "mode 600); a running orchestrator reads the changed file within a second."
)


@token_app.command("new")
def new(role: RoleOption) -> None:
    """Make a random token: prints it (shown only this once) and its tokens file line."""
    token = api_tokens.new_token()
    # Values on stdout (a script may take them), the explanation on stderr.
    typer.echo(f"A new {role.value} token, shown only this once, then its line:", err=True)
    typer.echo(token)
    typer.echo(api_tokens.file_line(role.value, token))
    typer.echo(_WHERE, err=True)


@token_app.command("hash")
def hash_(role: RoleOption) -> None:
    """Read a token from stdin (not echoed on a terminal) and print its tokens file line."""
    if sys.stdin.isatty():
        token = getpass.getpass("token: ")
    else:
        token = sys.stdin.read().strip()
    if token.startswith(api_tokens.HASH_PREFIX):
        typer.echo("tandem token hash: that is already a hash: give the token itself", err=True)
        raise typer.Exit(2)
    problem = api_tokens.token_problem(token)
    if problem is not None:
        # The problem never quotes the token.
        typer.echo(f"tandem token hash: {problem}", err=True)
        raise typer.Exit(2)
    typer.echo(api_tokens.file_line(role.value, token))
