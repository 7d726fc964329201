"""The apply loop makes applied batches durable alongside apply: a batch leaves the receive
queue only after its changes were fsynced, and batches a stopped target applied but had not
yet made durable are settled when it starts again."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from helpers import eventually
from tandem.events.catalog.vocabulary import ReplicaState
from tandem.replicator.apply import BatchApplier
from tandem.replicator.applyloop import ApplyLoop
from tandem.replicator.batch import Batch, pack
from tandem.replicator.codec import codec_named
from tandem.replicator.ops import Op, OpKind
from tandem.replicator.receivequeue import Incoming, ReceiveQueue


def stored(queue: ReceiveQueue, *batches: Batch) -> None:
    items = []
    for b in batches:
        data, headers = pack(b, codec_named("none"))
        items.append(Incoming(b.epoch, b.seq, data, headers))
    queue.put_many(items)


def batch(seq: int, name: str) -> Batch:
    return Batch(1, seq, seq * 10, (Op(OpKind.WRITE, name, data=f"v{seq}".encode()),))


def make_loop(tmp_path: Path) -> tuple[ApplyLoop, ReceiveQueue, BatchApplier]:
    queue = ReceiveQueue(tmp_path / "rq")
    applier = BatchApplier(tmp_path / "replica", tmp_path / "state")

    async def report(state: ReplicaState, reason: str) -> None:
        pass

    async def alert(code: str, reason: str) -> None:
        pass

    loop = ApplyLoop(queue, applier, report_state=report, raise_alert=alert)
    return loop, queue, applier


async def test_applied_batches_leave_the_queue_once_durable(tmp_path: Path) -> None:
    (tmp_path / "replica").mkdir()
    loop, queue, applier = make_loop(tmp_path)
    synced: set[str] = set()
    removed_before_sync: list[tuple[int, int]] = []
    real_sync, real_remove = applier.sync, queue.remove
    paths = {1: "a", 2: "b", 3: "a"}

    def recording_sync() -> None:
        touched = set(applier._touched)
        real_sync()
        synced.update(touched)

    def checked_remove(epoch: int, seq: int) -> None:
        if paths[seq] not in synced:
            removed_before_sync.append((epoch, seq))
        real_remove(epoch, seq)

    applier.sync = recording_sync  # type: ignore[method-assign]
    queue.remove = checked_remove  # type: ignore[method-assign]
    stored(queue, *(batch(seq, name) for seq, name in paths.items()))
    task = asyncio.create_task(loop.run(idle_s=0.05))
    try:
        await eventually(lambda: queue.count() == 0, timeout=10, what="the queue to empty")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert loop.applied_upto() == (1, 3)
    assert (tmp_path / "replica" / "a").read_bytes() == b"v3"
    assert synced == {"a", "b"} and removed_before_sync == [], "fsynced, then dropped"
    queue.close()
    applier.close()


async def test_batches_applied_before_a_restart_are_settled_at_start(tmp_path: Path) -> None:
    """A target stopped between apply and durability: the batches are applied (position) but
    still queued. At start they are fsynced and dropped, not applied again and not kept."""
    (tmp_path / "replica").mkdir()
    loop, queue, applier = make_loop(tmp_path)
    stored(queue, batch(1, "a"), batch(2, "b"), batch(3, "c"))
    for seq, name in ((1, "a"), (2, "b")):
        applier.apply(batch(seq, name))  # as the loop would, with no durability round yet
    queue.close()
    applier.close()

    loop, queue, applier = make_loop(tmp_path)  # the restarted target
    assert queue.count() == 3
    assert await asyncio.to_thread(loop.settle_leftovers) == 2
    assert queue.pending() == [(1, 3)], "only the batch not yet applied is left"
    task = asyncio.create_task(loop.run(idle_s=0.05))
    try:
        await eventually(lambda: queue.count() == 0, timeout=10, what="batch 3 applied")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert loop.applied_upto() == (1, 3) and (tmp_path / "replica" / "c").read_bytes() == b"v3"
    queue.close()
    applier.close()
