"""Verify & synchronize: only differences are sent; an out-of-sync replica converges."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from helpers import eventually
from replication_rig import Source, Target, tree
from tandem.events.bus import Bus
from tandem.events.catalog.vocabulary import ReplicaState
from tandem.events.subjects import JOURNAL_STREAM
from tandem.replicator.apply import ReplicaWriter
from tandem.replicator.manifest import scan
from tandem.replicator.ops import Op, OpKind
from tandem.replicator.syncpass import sync_pass


def populate(root: Path) -> None:
    (root / "db").mkdir(parents=True)
    (root / "db/big").write_bytes(os.urandom(2 * 1024 * 1024))
    (root / "db/small").write_bytes(b"small file")
    (root / "logs").mkdir()
    (root / "logs/app.log").write_bytes(b"line\n" * 1000)
    os.symlink("db/small", root / "current")


def test_a_local_pass_sends_only_what_differs(tmp_path: Path) -> None:
    source, replica = tmp_path / "source", tmp_path / "replica"
    populate(source)
    shutil.copytree(source, replica, symlinks=True)
    # Differences of every kind:
    with (source / "db/big").open("r+b") as f:
        f.seek(1024 * 1024)
        f.write(b"X" * 100)  # one 64 KiB block differs
    (source / "db/new").write_bytes(b"only on the source")
    (replica / "extra").mkdir()
    (replica / "extra/junk").write_bytes(b"only on the replica")
    os.chmod(source / "db/small", 0o600)
    os.remove(replica / "current")
    os.symlink("elsewhere", replica / "current")
    shutil.rmtree(replica / "logs")
    (replica / "logs").write_bytes(b"a file where the source has a directory")

    writer = ReplicaWriter(replica)
    stats = sync_pass(source, scan(replica), writer.apply)
    assert tree(replica) == tree(source)
    assert (replica / "db/small").stat().st_mode & 0o777 == 0o600
    assert stats.bytes_sent < 200_000, "one block of the big file, not the whole file"
    assert stats.checked == len(scan(source))
    again = sync_pass(source, scan(replica), writer.apply)
    assert again.out_of_sync == 0 and again.bytes_sent == 0


@pytest.fixture
async def pair(bus: Bus, tmp_path: Path):  # type: ignore[no-untyped-def]
    source = Source(bus, tmp_path / "source", tmp_path / "spill")
    target = Target(
        bus, tmp_path / "replica", tmp_path / "target-state", epoch=[1], gap_timeout_s=0.3
    )
    source.start()
    target.start()
    yield source, target
    await source.stop()
    await target.stop()


async def test_first_pairing_copies_the_whole_set(pair) -> None:  # type: ignore[no-untyped-def]
    source, target = pair
    populate(source.root)
    result = await source.verify()
    # Every file was just written: the first pass fixes them all and, each being in flight
    # as well, a second pass would only find the same kind of difference.
    assert result.ok and result.passes <= 2 and result.files_out_of_sync > 0
    await eventually(lambda: tree(target.root) == tree(source.root), what="the replica to match")
    assert target.loop.state is ReplicaState.IN_SYNC
    assert [s for s, _ in target.states] == [ReplicaState.SYNCING, ReplicaState.IN_SYNC]


async def test_an_out_of_sync_replica_converges_and_applies_live_writes_again(
    pair, bus: Bus
) -> None:  # type: ignore[no-untyped-def]
    source, target = pair
    source.do(Op(OpKind.WRITE, "a", data=b"before"))
    await source.publisher.drain(timeout=30)
    await eventually(lambda: target.loop.applied_upto() == (1, 1), what="batch 1")
    # The target is away while batches 2 and 3 are journaled; batch 2 then leaves the
    # stream (as retention would drop it) before the target comes back.
    await target.stop()
    source.do(Op(OpKind.WRITE, "lost", data=b"its batch is gone"))
    await source.publisher.drain(timeout=30)
    source.do(Op(OpKind.WRITE, "b", data=b"after the gap"))
    await source.publisher.drain(timeout=30)
    info = await bus.js.stream_info(JOURNAL_STREAM)
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await bus.js.get_msg(JOURNAL_STREAM, seq)
        if msg.headers and msg.headers.get("Tandem-Seq") == "2":
            await bus.js.delete_msg(JOURNAL_STREAM, seq)
    target.start()
    await eventually(lambda: target.loop.state is ReplicaState.OUT_OF_SYNC, what="out of sync")
    assert not (target.root / "lost").exists()

    result = await source.verify()
    assert result.ok
    await eventually(lambda: tree(target.root) == tree(source.root), what="convergence")
    assert target.loop.state is ReplicaState.IN_SYNC
    source.do(Op(OpKind.WRITE, "c", data=b"live again"))
    await source.publisher.drain(timeout=30)
    await eventually(lambda: (target.root / "c").exists(), what="live apply after verify")
    assert tree(target.root) == tree(source.root)


async def test_a_batch_the_replica_cannot_take_is_stepped_over_by_verify(pair, bus: Bus) -> None:  # type: ignore[no-untyped-def]
    source, target = pair
    source.do(Op(OpKind.WRITE, "kept", data=b"1"))
    # A rename of a file the replica never had (a capture that saw it too late).
    source.queue.submit(Op(OpKind.RENAME, "never-sent", target="renamed"))
    source.do(Op(OpKind.WRITE, "later", data=b"2"))
    await source.publisher.drain(timeout=30)
    await eventually(lambda: target.loop.state is ReplicaState.OUT_OF_SYNC, what="out of sync")
    assert "cannot be applied: [Errno 2]" in target.states[-1][1]
    result = await source.verify()
    assert result.ok
    await eventually(lambda: tree(target.root) == tree(source.root), what="convergence")
    assert target.loop.state is ReplicaState.IN_SYNC


async def test_verify_carries_owners_so_an_application_user_owns_its_replica(pair) -> None:  # type: ignore[no-untyped-def]
    """A database running as its own user refuses files owned by another: a replica built
    or repaired by verify has the source's owners (the target's agent runs as root here)."""
    if os.geteuid() != 0:
        pytest.skip("chown needs root")
    source, target = pair
    (source.root / "pgdata").mkdir(parents=True)
    (source.root / "pgdata" / "PG_VERSION").write_text("15\n")
    (source.root / "root-owned").write_text("stays root's")
    for p in (source.root / "pgdata", source.root / "pgdata" / "PG_VERSION"):
        os.chown(p, 4321, 4322)
    result = await source.verify()
    assert result.ok, result.reason
    await eventually(
        lambda: (target.root / "pgdata" / "PG_VERSION").exists(), what="the replica's copy"
    )
    for rel in ("pgdata", "pgdata/PG_VERSION"):
        st = os.lstat(target.root / rel)
        assert (st.st_uid, st.st_gid) == (4321, 4322), rel
    assert os.lstat(target.root / "root-owned").st_uid == 0
    # An owner changed on the replica behind Tandem's back is found and put back.
    os.chown(target.root / "pgdata" / "PG_VERSION", 0, 0)
    again = await source.verify()
    assert again.ok and again.files_out_of_sync == 1, again
    await eventually(
        lambda: os.lstat(target.root / "pgdata" / "PG_VERSION").st_uid == 4321, what="repair"
    )
