"""Typer option types more than one ``tandem`` command module takes (main.py, srm.py)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

ApiOption = Annotated[
    str | None,
    typer.Option(
        "--api",
        help="Orchestrator API URL (default: TANDEM_API_URL, the `tandem up` stack (`tandem "
        "--stack NAME`, TANDEM_STACK, or the only one running), or http://127.0.0.1:8700).",
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        help="API bearer token (default: TANDEM_API_TOKEN, or the `tandem up` stack's: its "
        "viewer token to read, its operator token to act).",
    ),
]
#: ``tandem srm``'s ``--token``: the same option, with the shorter help it has always shown
#: (both fall back the same way: see ``api_target.resolve_token``).
SrmTokenOption = Annotated[
    str | None,
    typer.Option("--token", help="API bearer token (default: TANDEM_API_TOKEN)."),
]


def flags_without_metavar() -> None:
    """A flag (``--confirm``, ``--wait/--no-wait``, ``-h``) shows no ``<bool>`` in ``--help``:
    it takes no value. Typer shows every option's type there; this leaves it out for flags
    (idempotent)."""
    from typer.core import TyperOption

    if getattr(TyperOption.display_type_rich, "_tandem_flags", False):
        return
    shown = TyperOption.display_type_rich

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        if self.is_flag and self.metavar is None:
            return None
        return shown(self, ctx)

    display_type_rich._tandem_flags = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]
