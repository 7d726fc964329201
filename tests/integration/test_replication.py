"""Replication through a real nats-server: send queue -> journal -> receive queue -> apply."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from helpers import eventually
from replication_rig import Source, Target, tree
from tandem.events.bus import Bus
from tandem.events.catalog.vocabulary import ReplicaState
from tandem.events.subjects import DLQ_STREAM, JOURNAL_STREAM, journal_msg_id, journal_subject
from tandem.replicator.batch import Batch, encode_body, pack
from tandem.replicator.codec import codec_named
from tandem.replicator.ops import Op, OpKind


def workload(seed: int, n: int) -> list[Op]:
    """Random but valid operations (each applies to the state the previous ones left)."""
    rnd = random.Random(seed)
    files: dict[str, int] = {}
    dirs = ["d1", "d2"]
    ops = [Op(OpKind.MKDIR, d, mode=0o755) for d in dirs]
    for i in range(n):
        choice = rnd.random()
        if choice < 0.15 or not files:
            path = f"{rnd.choice(dirs)}/f{i}"
            ops.append(Op(OpKind.CREATE, path, mode=0o644))
            files[path] = 0
        elif choice < 0.65:
            path = rnd.choice(list(files))
            size = rnd.choice([10, 4096, 70_000]) if rnd.random() < 0.9 else 600_000
            offset = rnd.randint(0, files[path])
            ops.append(Op(OpKind.WRITE, path, offset=offset, data=rnd.randbytes(size)))
            files[path] = max(files[path], offset + size)
        elif choice < 0.75:
            path = rnd.choice(list(files))
            files[path] = rnd.randint(0, files[path])
            ops.append(Op(OpKind.TRUNCATE, path, size=files[path]))
        elif choice < 0.85:
            path = rnd.choice(list(files))
            new = f"{rnd.choice(dirs)}/r{i}"
            ops.append(Op(OpKind.RENAME, path, target=new))
            files[new] = files.pop(path)
        elif choice < 0.92:
            path = rnd.choice(list(files))
            ops.append(Op(OpKind.UNLINK, path))
            del files[path]
        else:
            ops.append(Op(OpKind.SYMLINK, f"d1/l{i}", target=f"../{rnd.choice(dirs)}"))
    return ops


@pytest.fixture
async def rig(bus: Bus, tmp_path: Path):  # type: ignore[no-untyped-def]
    source = Source(bus, tmp_path / "source", tmp_path / "spill")
    target = Target(bus, tmp_path / "replica", tmp_path / "target-state", epoch=[1])
    source.start()
    target.start()
    yield source, target
    await source.stop()
    await target.stop()


async def converged(source: Source, target: Target) -> None:
    await source.publisher.drain(timeout=30)
    last = source.queue.last_sealed_seq
    await eventually(
        lambda: target.loop.applied_upto() >= (source.epoch, last),
        timeout=30,
        what="the target to apply everything",
    )


async def test_the_replica_becomes_byte_identical(rig) -> None:  # type: ignore[no-untyped-def]
    source, target = rig
    for op in workload(seed=7, n=400):
        source.do(op)
    await converged(source, target)
    assert tree(target.root) == tree(source.root)
    assert source.queue.last_sealed_seq > 3, "the workload spans several batches"
    assert target.refusals == [] and target.states == []


async def test_a_redelivered_batch_changes_nothing(rig, bus: Bus) -> None:  # type: ignore[no-untyped-def]
    source, target = rig
    source.do(Op(OpKind.WRITE, "a", data=b"one"))
    source.do(Op(OpKind.RENAME, "a", target="b"))
    await converged(source, target)
    # The same batch stored again in the stream (a replay): acked, not applied again.
    data, headers = pack(
        Batch(1, 1, 0, (Op(OpKind.WRITE, "a", data=b"one"), Op(OpKind.RENAME, "a", target="b"))),
        codec_named("zstd"),
    )
    await bus.js.publish(
        journal_subject("demo"), data, headers={**headers, "Nats-Msg-Id": "replay-1"}
    )
    source.do(Op(OpKind.WRITE, "c", data=b"after"))
    await converged(source, target)
    assert tree(target.root) == tree(source.root) == {"b": b"one", "c": b"after"}


async def publish_batch(
    bus: Bus, batch: Batch, *, body: bytes | None = None, corrupt: bool = False
) -> None:
    codec = codec_named("none")
    data, headers = pack(batch, codec)
    if body is not None:
        import xxhash

        data = body
        headers["Tandem-Checksum"] = xxhash.xxh64_hexdigest(body)
    if corrupt:
        data = data[:-1] + bytes([data[-1] ^ 0xFF])
    await bus.js.publish(
        journal_subject("demo"),
        data,
        headers={**headers, "Nats-Msg-Id": journal_msg_id("demo", batch.epoch, batch.seq)},
    )


async def dlq_reasons(bus: Bus) -> list[str]:
    info = await bus.js.stream_info(DLQ_STREAM)
    return (
        [
            (await bus.js.get_msg(DLQ_STREAM, s)).headers["Tandem-Dlq-Reason"]
            for s in range(info.state.first_seq, info.state.last_seq + 1)
        ]
        if info.state.messages
        else []
    )


async def test_a_batch_from_an_older_epoch_is_skipped_not_dead_lettered(rig, bus: Bus) -> None:  # type: ignore[no-untyped-def]
    """The old Active's last batches after a role change are expected: skipped with a
    reason (an info event), acknowledged, and kept out of the dead-letter stream, which an
    operator alerts on."""
    _, target = rig
    target.epoch[0] = 2
    await publish_batch(bus, Batch(1, 1, 0, (Op(OpKind.WRITE, "old", data=b"stale"),)))
    await eventually(lambda: target.skipped, what="the skip")
    assert target.skipped == [(1, 1, "stale epoch 1: the cluster is at epoch 2")]
    assert target.refusals == []
    assert not (target.root / "old").exists()
    assert await dlq_reasons(bus) == []
    for _ in range(100):  # acknowledged: never delivered again
        info = await bus.js.consumer_info(JOURNAL_STREAM, target.receiver.durable)
        if info.num_ack_pending == 0 and info.num_pending == 0:
            break
        await asyncio.sleep(0.1)
    assert (info.num_ack_pending, info.num_pending) == (0, 0)


async def test_a_path_outside_the_root_is_refused_and_nothing_is_written(
    rig, bus: Bus, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    _, target = rig
    body = encode_body(Batch(1, 1, 0, (Op(OpKind.WRITE, "../escaped", data=b"evil"),)))
    await publish_batch(bus, Batch(1, 1, 0, ()), body=body)
    await eventually(lambda: target.refusals, what="the refusal")
    [(_, _, reason)] = target.refusals
    assert "climbs out with '..'" in reason
    assert not (tmp_path / "escaped").exists() and list(target.root.iterdir()) == []
    assert "climbs out" in (await dlq_reasons(bus))[0]


async def test_a_corrupt_batch_is_fetched_again_then_refused(rig, bus: Bus) -> None:  # type: ignore[no-untyped-def]
    _, target = rig
    await publish_batch(bus, Batch(1, 1, 0, (Op(OpKind.WRITE, "x", data=b"data"),)), corrupt=True)
    await eventually(lambda: target.refusals, what="the refusal", timeout=20)
    assert target.refusals[0][2] == "checksum mismatch: the batch was corrupted on the way"
    assert target.receiver.refetched == 2, "fetched again before giving up"


async def test_a_gap_that_is_never_filled_marks_the_replica_out_of_sync(
    bus: Bus, tmp_path: Path
) -> None:
    target = Target(bus, tmp_path / "replica", tmp_path / "state", epoch=[1], gap_timeout_s=0.5)
    target.start()
    try:
        await publish_batch(bus, Batch(1, 1, 0, (Op(OpKind.WRITE, "a", data=b"1"),)))
        await publish_batch(bus, Batch(1, 3, 2, (Op(OpKind.WRITE, "c", data=b"3"),)))
        await eventually(lambda: target.states, what="out of sync", timeout=20)
        state, reason = target.states[0]
        assert state is ReplicaState.OUT_OF_SYNC
        assert reason.startswith("gap: batch 1:2 missing, 1:3 is here")
        assert (target.root / "a").read_bytes() == b"1" and not (target.root / "c").exists()
    finally:
        await target.stop()


async def test_a_takeover_accepts_a_gap_that_never_fills_and_applies_only_before_it(
    bus: Bus, tmp_path: Path
) -> None:
    """The old Active stored batch 3 but died before batch 2 was stored (chaos s040: its
    publish window outran a stream leader's loss, then its guard killed it). Catching up to
    become Active waited for batch 3 for good (the failover needed an operator); now it takes
    over the journal's unbroken beginning, batch 1, says what is lost, and applies nothing
    after the gap. Without ``accept_gap`` the wait still times out."""
    target = Target(bus, tmp_path / "replica", tmp_path / "state", epoch=[1], gap_timeout_s=0.5)
    target.start()
    try:
        await publish_batch(bus, Batch(1, 1, 0, (Op(OpKind.WRITE, "a", data=b"1"),)))
        await publish_batch(bus, Batch(1, 3, 2, (Op(OpKind.WRITE, "c", data=b"3"),)))
        with pytest.raises(TimeoutError):
            await target.loop.wait_applied((1, 3), 0.2)
        gap = await target.loop.wait_applied((1, 3), 60, accept_gap=True)
        assert gap.startswith("gap: batch 1:2 missing, 1:3 is here")
        assert target.loop.applied_upto() == (1, 1)
        assert (target.root / "a").read_bytes() == b"1" and not (target.root / "c").exists()
    finally:
        await target.stop()


async def test_a_replica_out_of_sync_for_a_gap_goes_on_when_the_batch_comes_after_all(
    bus: Bus, tmp_path: Path
) -> None:
    """A batch fetched but lost on the way (the journal's leader changed under the fetch) is
    delivered again later: the replica waits, is out of sync past the gap wait, and applies
    on, in order, when it comes (nothing was skipped, so no verify is needed)."""
    target = Target(bus, tmp_path / "replica", tmp_path / "state", epoch=[1], gap_timeout_s=0.5)
    target.start()
    try:
        await publish_batch(bus, Batch(1, 1, 0, (Op(OpKind.WRITE, "f", data=b"aa"),)))
        await publish_batch(bus, Batch(1, 3, 2, (Op(OpKind.WRITE, "g", data=b"3"),)))
        await eventually(lambda: target.states, what="out of sync", timeout=20)
        assert target.states[0][0] is ReplicaState.OUT_OF_SYNC
        await publish_batch(bus, Batch(1, 2, 1, (Op(OpKind.WRITE, "f", offset=1, data=b"B"),)))
        await eventually(lambda: target.loop.applied_upto() == (1, 3), what="all three")
        assert (target.root / "f").read_bytes() == b"aB" and (target.root / "g").exists()
        assert target.states[-1][0] is ReplicaState.IN_SYNC
        assert "the missing batch 1:2 came" in target.states[-1][1]
    finally:
        await target.stop()


async def test_a_gap_that_fills_late_is_applied_in_order(bus: Bus, tmp_path: Path) -> None:
    target = Target(bus, tmp_path / "replica", tmp_path / "state", epoch=[1])
    target.start()
    try:
        await publish_batch(bus, Batch(1, 2, 1, (Op(OpKind.WRITE, "f", offset=1, data=b"B"),)))
        await publish_batch(bus, Batch(1, 1, 0, (Op(OpKind.WRITE, "f", data=b"aa"),)))
        await eventually(lambda: target.loop.applied_upto() == (1, 2), what="both batches")
        assert (target.root / "f").read_bytes() == b"aB"
    finally:
        await target.stop()


async def test_a_target_that_was_offline_catches_up_from_the_stream(rig) -> None:  # type: ignore[no-untyped-def]
    source, target = rig
    ops = workload(seed=3, n=200)
    for op in ops[:100]:
        source.do(op)
    await converged(source, target)
    await target.stop()  # the target goes away...
    for op in ops[100:]:
        source.do(op)
    await source.publisher.drain(timeout=30)
    target.start()  # ...and comes back: same durable consumer, same apply position
    await converged(source, target)
    assert tree(target.root) == tree(source.root)


async def test_a_new_epoch_follows_the_old_one(rig, bus: Bus) -> None:  # type: ignore[no-untyped-def]
    source, target = rig
    source.do(Op(OpKind.WRITE, "f", data=b"epoch1"))
    await converged(source, target)
    target.epoch[0] = 2
    await publish_batch(bus, Batch(2, 1, 0, (Op(OpKind.WRITE, "f", data=b"EPOCH2"),)))
    await eventually(lambda: target.loop.applied_upto() == (2, 1), what="epoch 2 batch 1")
    assert (target.root / "f").read_bytes() == b"EPOCH2"
