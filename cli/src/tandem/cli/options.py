"""Typer option types more than one ``tandem`` command module takes (main.py, srm.py)."""

from __future__ import annotations

from typing import Annotated

import typer

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
    typer.Option(
        "--token",
        help="API bearer token (default: TANDEM_API_TOKEN, or a running `tandem up`'s "
        "operator token).",
    ),
]
#: ``tandem srm``'s ``--token``: the same option, with the shorter help it has always shown
#: (both fall back the same way: see ``api_client.resolve_token``).
SrmTokenOption = Annotated[
    str | None,
    typer.Option("--token", help="API bearer token (default: TANDEM_API_TOKEN)."),
]
