"""Applying operations to a replica: confined to the root, resumable op by op."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tandem.replicator.apply import ApplyRefusedError, BatchApplier, ReplicaWriter
from tandem.replicator.batch import Batch
from tandem.replicator.ops import Op, OpKind


def test_operations_build_the_tree(tmp_path: Path) -> None:
    w = ReplicaWriter(tmp_path / "r")
    for op in [
        Op(OpKind.MKDIR, "db", mode=0o750),
        Op(OpKind.CREATE, "db/data", mode=0o640),
        Op(OpKind.WRITE, "db/data", offset=0, data=b"hello world"),
        Op(OpKind.WRITE, "db/data", offset=6, data=b"WORLD"),
        Op(OpKind.TRUNCATE, "db/data", size=8),
        Op(OpKind.SYMLINK, "db/link", target="data"),
        Op(OpKind.RENAME, "db/data", target="db/data2"),
        Op(OpKind.SET_TIMES, "db/data2", atime_ns=10**18, mtime_ns=2 * 10**18),
        Op(OpKind.FSYNC, "db/data2"),
    ]:
        w.apply(op)
    r = tmp_path / "r"
    assert (r / "db/data2").read_bytes() == b"hello WO"
    assert not (r / "db/data").exists()
    assert os.readlink(r / "db/link") == "data"
    assert (r / "db/data2").stat().st_mode & 0o777 == 0o640
    assert (r / "db/data2").stat().st_mtime_ns == 2 * 10**18


def test_nothing_is_written_through_a_symlinked_parent(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    w = ReplicaWriter(tmp_path / "r")
    w.apply(Op(OpKind.SYMLINK, "escape", target=str(outside)))
    with pytest.raises(ApplyRefusedError, match="symlink 'escape'"):
        w.apply(Op(OpKind.WRITE, "escape/evil", data=b"x"))
    assert list(outside.iterdir()) == []


def test_a_traversal_is_refused_at_apply(tmp_path: Path) -> None:
    w = ReplicaWriter(tmp_path / "r")
    with pytest.raises(ApplyRefusedError, match="climbs out"):
        w.apply(Op(OpKind.WRITE, "../evil", data=b"x"))
    assert not (tmp_path / "evil").exists()


def test_a_replayed_batch_changes_nothing(tmp_path: Path) -> None:
    applier = BatchApplier(tmp_path / "r", tmp_path / "state")
    batch = Batch(1, 1, 0, (Op(OpKind.WRITE, "a", data=b"1"), Op(OpKind.RENAME, "a", target="b")))
    assert applier.apply(batch) == 2
    assert applier.apply(batch) == 0
    applier.close()
    again = BatchApplier(tmp_path / "r", tmp_path / "state")
    assert again.done(1, 1) and again.apply(batch) == 0
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["b"]


def test_a_batch_cut_short_resumes_at_the_next_operation(tmp_path: Path) -> None:
    ops = (
        Op(OpKind.WRITE, "a", data=b"first"),
        Op(OpKind.RENAME, "a", target="b"),
        Op(OpKind.WRITE, "b", offset=5, data=b"+more"),
    )
    applier = BatchApplier(tmp_path / "r", tmp_path / "state")
    # A crash after the rename: apply the first two ops, keep the position, "restart".
    applier.apply(Batch(1, 1, 0, ops[:2]))
    from tandem.replicator.apply import Position

    applier._record(Position(1, 1, 2))
    applier.close()
    restarted = BatchApplier(tmp_path / "r", tmp_path / "state")
    assert restarted.apply(Batch(1, 1, 0, ops)) == 1
    assert (tmp_path / "r/b").read_bytes() == b"first+more"
    assert not (tmp_path / "r/a").exists()


MIXED = (
    Op(OpKind.WRITE, "a", data=b"0123456789"),
    Op(OpKind.WRITE, "a", offset=4, data=b"xy"),
    Op(OpKind.TRUNCATE, "a", size=7),
    Op(OpKind.RENAME, "a", target="b"),
    Op(OpKind.WRITE, "b", offset=7, data=b"+tail"),
    Op(OpKind.CREATE, "c", mode=0o600),
    Op(OpKind.WRITE, "a", data=b"a again"),
    Op(OpKind.WRITE, "c", data=b"see"),
    Op(OpKind.UNLINK, "b"),
    Op(OpKind.WRITE, "c", offset=3, data=b"!"),
    Op(OpKind.CHMOD, "c", mode=0o640),
    Op(OpKind.SYMLINK, "l", target="c"),
    Op(OpKind.TRUNCATE, "a", size=1),
)


class Crash(Exception):
    """The process dies here (the position on disk is whatever was recorded)."""


def tree(root: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    for p in sorted(root.iterdir()):
        if p.is_symlink():
            out[p.name] = ("link", os.readlink(p))
        else:
            out[p.name] = (p.read_bytes(), p.stat().st_mode & 0o777)
    return out


@pytest.mark.parametrize("crash_at", range(len(MIXED)))
def test_a_crash_at_any_operation_then_a_restart_gives_the_same_replica(
    tmp_path: Path, crash_at: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Progress is recorded only after renames, unlinks, rmdirs and symlinks (and at the end):
    a restart replays the repeatable ops since then; the replica must end as a clean apply."""
    batch = Batch(3, 9, 0, MIXED)
    clean = BatchApplier(tmp_path / "clean", tmp_path / "clean-state")
    clean.apply(batch)
    clean.close()

    crashing = BatchApplier(tmp_path / "r", tmp_path / "state")
    real_apply = crashing.writer.apply
    done = 0

    def apply_until_crash(op: Op) -> None:
        nonlocal done
        if done == crash_at:
            raise Crash
        real_apply(op)
        done += 1

    monkeypatch.setattr(crashing.writer, "apply", apply_until_crash)
    with pytest.raises(Crash):
        crashing.apply(batch)
    crashing.close()

    restarted = BatchApplier(tmp_path / "r", tmp_path / "state")
    restarted.apply(batch)
    assert restarted.done(3, 9)
    assert tree(tmp_path / "r") == tree(tmp_path / "clean")
