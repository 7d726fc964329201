"""The journal publisher on a real nats-server: a sliding window of unacknowledged batches,
stored in order and exactly once, also when the bus refuses a round and it is sent again."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from nats.errors import TimeoutError as NatsTimeoutError

from tandem.events.bus import Bus
from tandem.events.settings import load_stream_settings
from tandem.events.subjects import JOURNAL_STREAM, journal_msg_id, journal_subject
from tandem.replicator.batch import H_SEQ, unpack
from tandem.replicator.codec import codec_named
from tandem.replicator.ops import Op, OpKind
from tandem.replicator.publisher import JournalPublisher
from tandem.replicator.sendqueue import SendQueue, SendQueueLimits

CLUSTER = "pubtest"


def filled_queue(tmp_path: Path, batches: int) -> SendQueue:
    """``batches`` sealed batches of one write each; some spilled (small memory)."""
    q = SendQueue(
        epoch=2,
        codec=codec_named("zstd"),
        spill_dir=tmp_path / "spill",
        limits=SendQueueLimits(batch_bytes=4096, batch_age_s=60, memory_bytes=20_000),
    )
    for i in range(batches):
        q.submit(Op(OpKind.WRITE, f"f{i}", offset=i, data=bytes([i % 256]) * 3000))
        q.seal_now()
    assert q.spilled_bytes > 0, "part of the queue is on disk"
    return q


async def journal(bus: Bus) -> list[tuple[int, str, str]]:
    """(stream seq, message id, first op's path) of every journal message, in stream order."""
    sub = await bus.js.pull_subscribe(journal_subject(CLUSTER), stream=JOURNAL_STREAM)
    found: list[tuple[int, str, str]] = []
    try:
        while True:
            try:
                msgs = await sub.fetch(100, timeout=1.0)
            except (NatsTimeoutError, TimeoutError):
                return found
            for m in msgs:
                headers = m.headers or {}
                batch = unpack(m.data, headers)
                assert str(batch.seq) == headers[H_SEQ]
                found.append(
                    (m.metadata.sequence.stream, headers["Nats-Msg-Id"], batch.ops[0].path)
                )
                await m.ack()
    finally:
        await sub.unsubscribe()


async def run_until_drained(publisher: JournalPublisher, timeout: float) -> None:
    task = asyncio.create_task(publisher.run())
    try:
        await publisher.drain(timeout=timeout)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_small_window_stores_every_batch_once_and_in_order(
    bus: Bus, tmp_path: Path
) -> None:
    q = filled_queue(tmp_path, 40)
    publisher = JournalPublisher(bus, CLUSTER, q, window=3)
    await run_until_drained(publisher, timeout=30)
    stored = await journal(bus)
    assert [mid for _, mid, _ in stored] == [journal_msg_id(CLUSTER, 2, s) for s in range(1, 41)]
    assert [path for _, _, path in stored] == [f"f{i}" for i in range(40)]
    assert publisher.stored_upto == 40 and q.depth() == (0, 0)
    assert list((tmp_path / "spill").iterdir()) == [], "spilled batches are released once stored"


async def test_a_round_the_bus_refuses_is_sent_again_in_order(bus: Bus, tmp_path: Path) -> None:
    """The journal stream is missing at first: every publish fails (no stream answers). The
    publisher keeps the batches and retries; once the stream exists they are stored in order,
    each once."""
    await bus.js.delete_stream(JOURNAL_STREAM)
    q = filled_queue(tmp_path, 12)
    publisher = JournalPublisher(bus, CLUSTER, q, window=5, ack_timeout_s=2.0)
    task = asyncio.create_task(publisher.run())
    try:
        await asyncio.sleep(1.0)  # a few failed rounds
        assert publisher.stored_upto == 0 and q.depth()[0] == 12, "nothing is dropped"
        await bus.provision(load_stream_settings(), update_existing=False)
        await publisher.drain(timeout=30)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    stored = await journal(bus)
    assert [mid for _, mid, _ in stored] == [journal_msg_id(CLUSTER, 2, s) for s in range(1, 13)]
