"""Assembly of the replicator on one node: ``run(settings, bus)``."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from pathlib import Path

from tandem.events.bus import Bus
from tandem.events.nodeboard import NodeBoard
from tandem.events.outbox import Outbox
from tandem.events.rpc import CommandServer, ResultListener
from tandem.events.runtime import ServiceSpec, idle_until_cancelled, service_lifetime
from tandem.replicator.allocator import tune_allocator
from tandem.replicator.apply import ReplicaWriter
from tandem.replicator.manifest import SyncStats, scan
from tandem.replicator.node import ReplicatorNode
from tandem.replicator.settings import ReplicatorSettings, load
from tandem.replicator.steps import COMMANDS, handle_step, nothing_to_replicate
from tandem.replicator.syncpass import sync_pass
from tandem.replicator.verify import VerifyResult


async def run(
    settings: ReplicatorSettings,
    bus: Bus,
    *,
    board: NodeBoard | None = None,
    on_result: ResultListener | None = None,
    outbox: Outbox | None = None,
) -> None:
    """Replicate this node's protected folder and answer the replication steps. ``board``
    and ``outbox`` are shared with the other parts of a node agent; ``on_result`` hears of
    every step."""
    async with contextlib.AsyncExitStack() as stack:
        if outbox is None:
            outbox = await stack.enter_async_context(Outbox(bus).sending())
        await _run(settings, bus, board, on_result, outbox)


async def _run(
    settings: ReplicatorSettings,
    bus: Bus,
    board: NodeBoard | None,
    on_result: ResultListener | None,
    outbox: Outbox,
) -> None:
    lifetime = service_lifetime(
        bus, "replicator", cluster=settings.cluster, node=settings.node, outbox=outbox
    )
    async with lifetime:
        if settings.protected_root is None:
            # Nothing to replicate, but a saga's replication steps still get an answer.
            nothing = CommandServer(
                bus,
                settings.cluster,
                settings.node,
                nothing_to_replicate,
                lambda: 0,
                commands=COMMANDS,
                on_result=on_result,
            )
            await nothing.start()
            try:
                await idle_until_cancelled()
            finally:
                await nothing.stop()
            return
        tune_allocator()  # process-wide: batches' large buffers are reused, not re-faulted
        node = ReplicatorNode(settings, bus, board=board, emit=outbox.put)
        steps = CommandServer(
            bus,
            settings.cluster,
            settings.node,
            functools.partial(handle_step, node),
            lambda: node.epoch,
            commands=COMMANDS,
            on_result=on_result,
        )
        await steps.start()
        try:
            await node.run()
        finally:
            await steps.stop()


SERVICE = ServiceSpec(name="replicator", load_settings=load, run=run)


def verify_folders(
    source: Path, replica: Path, progress: Callable[[int, int, int], None] = lambda c, t, b: None
) -> VerifyResult:
    """Verify & synchronize two local folders (``tandem verify --source --replica``): fix
    the replica where it differs, then check once more. ``progress(checked, total, bytes)``."""

    def on_progress(stats: SyncStats, total: int) -> None:
        progress(stats.checked, total, stats.bytes_sent)

    writer = ReplicaWriter(replica)
    first = sync_pass(source, scan(replica), writer.apply, progress=on_progress)
    second = sync_pass(source, scan(replica), writer.apply)
    ok = second.out_of_sync == 0
    reason = (
        "replica matches"
        if ok
        else f"{second.out_of_sync} entries still differ (the source is changing)"
    )
    return VerifyResult(ok, 2, first.checked, first.out_of_sync, first.bytes_sent, reason)
