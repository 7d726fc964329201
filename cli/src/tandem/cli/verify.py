"""``tandem verify``: verify & synchronize a cluster's replicas (through its Active's
replicator) or two local folders, with a progress bar and a summary."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from nats.js.api import ConsumerConfig, DeliverPolicy
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tandem.events.bus import Bus
from tandem.events.catalog import SyncProgress, VerifyReplica
from tandem.events.catalog.commands import VerifyReplicaPayload
from tandem.events.registry import decode_event
from tandem.events.roles import read_role
from tandem.events.rpc import send_command
from tandem.events.settings import BusSettings
from tandem.events.subjects import EVENTS_STREAM, ROLES_BUCKET, events_filter


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[sent]} sent"),
        TimeElapsedColumn(),
    )


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def summary(rows: dict[str, dict[str, Any]]) -> Table:
    table = Table(title="verify & synchronize")
    for col in (
        "target",
        "result",
        "files checked",
        "out of sync",
        "bytes sent",
        "passes",
        "reason",
    ):
        table.add_column(col)
    for target, r in rows.items():
        table.add_row(
            target,
            "[green]ok[/]" if r["ok"] else "[red]failed[/]",
            str(r["files_checked"]),
            str(r["files_out_of_sync"]),
            _size(r["bytes_sent"]),
            str(r["passes"]),
            r["reason"],
        )
    return table


def verify_local(console: Console, source: Path, replica: Path) -> bool:
    from tandem.replicator.service import verify_folders

    with _progress() as bar:
        task = bar.add_task(f"{source} -> {replica}", total=None, sent="0 B")

        def progress(checked: int, total: int, sent: int) -> None:
            bar.update(task, completed=checked, total=total, sent=_size(sent))

        result = verify_folders(source, replica, progress)
    console.print(summary({str(replica): result.__dict__}))
    return result.ok


async def verify_cluster(
    console: Console,
    settings: BusSettings,
    cluster: str,
    node: str | None,
    target: str | None,
    timeout: float,
) -> bool:
    async with await Bus.connect(settings, name="tandem-verify") as bus:
        role, _ = await read_role(await bus.kv(ROLES_BUCKET), cluster)
        if node is None:
            if role is None:
                raise LookupError(
                    f"cluster {cluster!r} has no Active recorded yet; name one with --node"
                )
            node = role.active
        command = VerifyReplica(
            cluster=cluster,
            node=node,
            epoch=role.epoch if role else 0,
            payload=VerifyReplicaPayload(target=target, reason="requested with tandem verify"),
        )
        sub = await bus.js.subscribe(
            events_filter(cluster, "SyncProgress"),
            stream=EVENTS_STREAM,
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW),
        )
        with _progress() as bar:
            tasks: dict[str, Any] = {}

            async def follow() -> None:
                async for msg in sub.messages:
                    event = decode_event(msg.data)
                    if isinstance(event, SyncProgress):
                        p = event.payload
                        if p.target not in tasks:
                            tasks[p.target] = bar.add_task(
                                f"{node} -> {p.target}", total=None, sent="0 B"
                            )
                        bar.update(
                            tasks[p.target],
                            completed=p.files_checked,
                            total=p.files_total,
                            sent=_size(p.bytes_sent),
                        )

            follower = asyncio.create_task(follow())
            try:
                result = await send_command(bus, command, timeout=timeout)
            finally:
                follower.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await follower
                await sub.unsubscribe()
        if result.data:
            console.print(summary(result.data))
        if not result.ok:
            console.print(f"[red]{result.reason}[/]")
        return result.ok
