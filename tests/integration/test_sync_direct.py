"""Sync mode's direct path on a real nats-server: a source in sync mode sends each batch
straight to the targets as well as to the journal. A target stores a direct batch at once,
says it holds a sequence only when it holds every batch before it too, leaves anything
unusable to the journal's copy, and acknowledges the journal's copy without storing it twice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from helpers import eventually
from replication_rig import Target
from tandem.events.bus import Bus
from tandem.events.subjects import JOURNAL_STREAM, journal_msg_id, journal_subject
from tandem.replicator.batch import Batch, encode_body, pack
from tandem.replicator.codec import codec_named
from tandem.replicator.ops import Op, OpKind
from tandem.replicator.syncmode import direct_subject


@pytest.fixture
async def target(bus: Bus, tmp_path: Path) -> AsyncIterator[Target]:
    t = Target(bus, tmp_path / "replica", tmp_path / "target-state", epoch=[1])
    t.start()
    await eventually(lambda: consumer_exists(bus), what="the target's journal consumer")
    yield t
    await t.stop()


async def consumer_exists(bus: Bus) -> bool:
    try:
        await bus.js.consumer_info(JOURNAL_STREAM, "jrnl-demo-secondary")
    except Exception:
        return False
    return True


def wire(seq: int, *ops: Op, body: bytes | None = None) -> tuple[bytes, dict[str, str]]:
    data, headers = pack(Batch(1, seq, seq * 10, ops), codec_named("zstd"))
    if body is not None:  # a body pack() would never make (an unsafe path)
        import xxhash

        data, headers["Tandem-Codec"] = body, "none"
        headers["Tandem-Checksum"] = xxhash.xxh64_hexdigest(body)
    return data, {**headers, "Nats-Msg-Id": journal_msg_id("demo", 1, seq)}


async def send_direct(bus: Bus, data: bytes, headers: dict[str, str]) -> None:
    await bus.nc.publish(direct_subject("demo"), data, headers=headers)
    await bus.nc.flush()


def write(path: str, data: bytes) -> Op:
    return Op(OpKind.WRITE, path, data=data)


async def test_a_direct_batch_is_stored_and_its_journal_copy_is_not_stored_again(
    bus: Bus, target: Target
) -> None:
    data, headers = wire(1, write("a", b"direct"))
    await send_direct(bus, data, headers)
    await eventually(lambda: (1, 1) in target.held, what="the direct batch to be held")
    await eventually(lambda: (target.root / "a").exists(), what="the direct batch applied")

    await bus.js.publish(journal_subject("demo"), data, headers=headers)

    async def journal_copy_acked() -> bool:
        info = await bus.js.consumer_info(JOURNAL_STREAM, "jrnl-demo-secondary")
        return info.ack_floor.stream_seq >= 1 and info.num_ack_pending == 0

    await eventually(journal_copy_acked, what="the journal's copy to be acknowledged")
    assert (target.root / "a").read_bytes() == b"direct"
    assert target.refusals == [] and target.queue.count() == 0


async def test_a_sequence_is_held_only_once_every_batch_before_it_is_here(
    bus: Bus, target: Target
) -> None:
    second = wire(2, write("b", b"second"))
    await send_direct(bus, *second)
    await eventually(lambda: target.held, what="the receiver to store the direct batch")
    assert target.held[-1] == (1, 0), "batch 1 is missing: nothing may be counted held"
    assert target.queue.has(1, 2) and not (target.root / "b").exists()

    await send_direct(bus, *wire(1, write("a", b"first")))
    await eventually(lambda: target.held[-1] == (1, 2), what="both batches held")
    await eventually(lambda: (target.root / "b").exists(), what="both applied in order")
    assert (target.root / "a").read_bytes() == b"first"


async def test_an_unusable_direct_batch_is_left_to_the_journal_copy(
    bus: Bus, target: Target, tmp_path: Path
) -> None:
    body = encode_body(Batch(1, 1, 10, (write("../escaped", b"evil"),)))
    data, headers = wire(1, body=body)
    await send_direct(bus, data, headers)
    await send_direct(bus, *wire(2, write("later", b"x")))  # proof the first was handled
    await eventually(lambda: target.queue.has(1, 2), what="the next direct batch stored")
    assert not target.queue.has(1, 1) and target.refusals == []
    assert not (tmp_path / "escaped").exists()

    await bus.js.publish(journal_subject("demo"), data, headers=headers)
    await eventually(lambda: target.refusals, what="the journal copy's refusal")
    assert "climbs out" in target.refusals[0][2]
    assert not (tmp_path / "escaped").exists()


async def test_a_direct_batch_of_an_older_epoch_is_ignored(bus: Bus, target: Target) -> None:
    target.epoch[0] = 2
    await send_direct(bus, *wire(1, write("old", b"stale")))
    data, headers = pack(Batch(2, 1, 0, (write("new", b"fresh"),)), codec_named("zstd"))
    await send_direct(bus, data, headers)
    await eventually(lambda: (target.root / "new").exists(), what="the current epoch's batch")
    assert not (target.root / "old").exists() and not target.queue.has(1, 1)
