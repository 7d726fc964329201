"""``tandem switchover``, ``failover`` and ``group switchover``: the commands that start a
saga moving the Active role, and their options; ``operate.run_action`` submits and follows it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console

from tandem.cli.options import ApiOption, TokenOption

if TYPE_CHECKING:
    from tandem.cli.operate import Action

#: ``tandem group``: main.py adds it to the app where the other sub-apps go.
group_app = typer.Typer(help="Act on groups of clusters.", no_args_is_help=True)

console = Console()
err = Console(stderr=True)

ToOption = Annotated[
    str | None,
    typer.Option("--to", help="The node to make Active (default: the orchestrator's pick)."),
]
ReasonOption = Annotated[
    str | None, typer.Option("--reason", help="Why; recorded with the operation.")
]
WaitOption = Annotated[
    bool, typer.Option("--wait/--no-wait", help="Follow the saga until it ends.")
]
TimeoutOption = Annotated[
    float, typer.Option("--timeout", help="Stop waiting after this many seconds.", min=0)
]


def _run_action(action: Action, target: str, **options: Any) -> NoReturn:
    """The operation commands differ only in their options: one place starts them."""
    from tandem.cli import operate

    raise typer.Exit(operate.run_action(console, err, action, target, **options))


def switchover(
    cluster: Annotated[str, typer.Argument(help="The cluster.")],
    to: ToOption = None,
    reason: ReasonOption = None,
    wait: WaitOption = True,
    timeout: TimeoutOption = 300.0,
    api: ApiOption = None,
    token: TokenOption = None,
) -> None:
    """Planned switchover: move the Active role to a Passive, in order, with no data loss."""
    _run_action(
        "switchover",
        cluster,
        api=api,
        token=token,
        to=to,
        reason=reason,
        wait=wait,
        timeout_s=timeout,
    )


def failover(
    cluster: Annotated[str, typer.Argument(help="The cluster.")],
    confirm: Annotated[
        bool, typer.Option("--confirm", help="Yes: the Active is down, take over without it.")
    ] = False,
    to: ToOption = None,
    reason: ReasonOption = None,
    wait: WaitOption = True,
    timeout: TimeoutOption = 300.0,
    api: ApiOption = None,
    token: TokenOption = None,
) -> None:
    """Failover: make a Passive the Active when the Active is lost (needs --confirm)."""
    _run_action(
        "failover",
        cluster,
        api=api,
        token=token,
        to=to,
        reason=reason,
        wait=wait,
        timeout_s=timeout,
        confirm=confirm,
    )


def group_switchover(
    group: Annotated[str, typer.Argument(help="The group.")],
    reason: ReasonOption = None,
    wait: WaitOption = True,
    timeout: TimeoutOption = 300.0,
    api: ApiOption = None,
    token: TokenOption = None,
) -> None:
    """Switch every cluster of a group over, in dependency order."""
    _run_action(
        "group switchover",
        group,
        api=api,
        token=token,
        reason=reason,
        wait=wait,
        timeout_s=timeout,
    )


def register(app: typer.Typer) -> None:
    """Add ``switchover`` and ``failover`` to the ``tandem`` app, ``switchover`` to ``group``."""
    app.command()(switchover)
    app.command()(failover)
    group_app.command("switchover")(group_switchover)
