"""``tandem logs [SERVICE|NODE] [-f]``: the logs of a ``tandem up`` stack.

``tandem up`` writes each child's output to ``<store>/logs/<child>.log`` and the bus's to
``<store>/nats/nats.log``. A name picks one: a service (``orchestrator``, ``dns_updater`` or
``dns-updater``...), a demo node (``primary`` is ``agent-primary``), ``nats`` (or ``bus``);
none: every log, each line prefixed with its name. ``-f`` follows them until Ctrl-C.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from tandem.cli.stacks import StackError, select

EXIT_OK = 0
EXIT_REFUSED = 2
FOLLOW_INTERVAL_S = 0.2


@dataclass
class _Followed:
    name: str
    path: Path
    offset: int = 0
    partial: str = ""


def log_files(store: Path) -> dict[str, Path]:
    """Each log of a stack's store by name: ``orchestrator``, ``agent-primary``, ``nats``..."""
    logs = store / "logs"
    found = {p.stem: p for p in sorted(logs.glob("*.log"))} if logs.is_dir() else {}
    nats = store / "nats" / "nats.log"
    if nats.exists():
        found["nats"] = nats
    return found


def pick(files: dict[str, Path], wanted: str | None) -> dict[str, Path]:
    """The logs ``wanted`` names (all when None); ``LookupError`` naming the known ones."""
    if wanted is None:
        return files
    key = wanted.strip().lower()
    for candidate in (key, key.replace("-", "_"), f"agent-{key}", "nats" if key == "bus" else ""):
        if candidate in files:
            return {candidate: files[candidate]}
    known = ", ".join(files) or "none yet"
    raise LookupError(f"no log named {wanted!r} in this stack (its logs: {known})")


def last_lines(path: Path, lines: int) -> tuple[list[str], int]:
    """The last ``lines`` lines of ``path`` and the offset its end is at."""
    with path.open("rb") as handle:
        tail = deque((raw.decode("utf-8", "replace").rstrip("\n") for raw in handle), lines)
        return list(tail), handle.tell()


def follow(
    files: dict[str, Path],
    offsets: dict[str, int],
    emit: Callable[[str, str], None],
    *,
    stop: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Print what is appended to each file from its offset on, until ``stop()`` (Ctrl-C for
    the command); a file truncated or replaced (a new run of the stack) is read from its
    start again."""
    followed = [_Followed(n, p, offsets.get(n, 0)) for n, p in files.items()]
    while not stop():
        for item in followed:
            try:
                size = item.path.stat().st_size
            except OSError:
                continue
            if size < item.offset:
                item.offset, item.partial = 0, ""
            if size == item.offset:
                continue
            with item.path.open("rb") as handle:
                handle.seek(item.offset)
                chunk = handle.read(size - item.offset)
            item.offset += len(chunk)
            text = item.partial + chunk.decode("utf-8", "replace")
            *complete, item.partial = text.split("\n")
            for line in complete:
                emit(item.name, line)
        sleep(FOLLOW_INTERVAL_S)


def logs_command(
    name: Annotated[
        str | None,
        typer.Argument(
            help="A service (orchestrator, dns_updater...), a demo node (primary, "
            "secondary) or nats; none: every log.",
            show_default=False,
        ),
    ] = None,
    follow_: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing what is appended (Ctrl-C).")
    ] = False,
    lines: Annotated[
        int, typer.Option("--lines", "-n", help="How many last lines of each log.", min=0)
    ] = 20,
    stack: Annotated[
        str | None,
        typer.Option(
            "--stack", help="The `tandem up` stack (default: TANDEM_STACK, the only one)."
        ),
    ] = None,
    store_dir: Annotated[
        Path | None,
        typer.Option("--store-dir", help="A stack's store folder, running or not."),
    ] = None,
) -> None:
    """Print the logs of a `tandem up` stack (`<store>/logs/`); -f follows them."""
    if store_dir is None:
        try:
            found = select(stack)
        except StackError as exc:
            typer.echo(f"tandem logs: {exc.message}", err=True)
            raise typer.Exit(EXIT_REFUSED) from None
        if found is None or not found.get("store_dir"):
            why = (
                "no `tandem up` stack is running"
                if found is None
                else f"stack {found.name} names no store"
            )
            typer.echo(f"tandem logs: {why}: give --store-dir DIR", err=True)
            raise typer.Exit(EXIT_REFUSED)
        store_dir = Path(str(found.get("store_dir")))
    try:
        files = pick(log_files(store_dir), name)
    except LookupError as exc:
        typer.echo(f"tandem logs: {exc}", err=True)
        raise typer.Exit(EXIT_REFUSED) from None
    if not files:
        typer.echo(f"tandem logs: no log in {store_dir} yet", err=True)
        raise typer.Exit(EXIT_REFUSED)
    prefix = len(files) > 1
    width = max(len(n) for n in files)

    def emit(source: str, line: str) -> None:
        typer.echo(f"{source:<{width}} | {line}" if prefix else line)

    offsets: dict[str, int] = {}
    for source, path in files.items():
        shown, offsets[source] = last_lines(path, lines) if lines else ([], path.stat().st_size)
        for line in shown:
            emit(source, line)
    if follow_:
        try:
            follow(files, offsets, emit)
        except KeyboardInterrupt:
            pass
    raise typer.Exit(EXIT_OK)
