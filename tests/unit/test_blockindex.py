"""BlockIndex: only changed blocks are written, sizes are exact, vanished files are tolerated."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tandem.replicator.apply import ReplicaWriter
from tandem.replicator.blockindex import BlockIndex
from tandem.replicator.ops import Op, OpKind

BLOCK = 64 * 1024
MIB = 1024 * 1024


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def writes(ops: list[Op]) -> list[Op]:
    return [op for op in ops if op.kind is OpKind.WRITE]


@pytest.fixture
def index() -> BlockIndex:
    return BlockIndex(block_size=BLOCK)


def test_new_file_is_written_whole_and_sized(tmp_path: Path, index: BlockIndex) -> None:
    data = payload(3 * BLOCK + 123)
    (tmp_path / "f").write_bytes(data)

    ops = index.diff("f", tmp_path / "f")

    assert [op.kind for op in ops] == [OpKind.WRITE, OpKind.TRUNCATE]
    assert ops[0].offset == 0 and ops[0].data == data
    assert ops[1].size == len(data)
    entry = index.get("f")
    assert entry is not None and entry.size == len(data) and len(entry.digests) == 4


def test_new_empty_file_needs_nothing(tmp_path: Path, index: BlockIndex) -> None:
    (tmp_path / "f").write_bytes(b"")
    assert index.diff("f", tmp_path / "f") == []
    assert "f" in index


def test_one_block_changed_in_the_middle_writes_that_block_only(
    tmp_path: Path, index: BlockIndex
) -> None:
    path = tmp_path / "f"
    data = bytearray(payload(MIB))
    path.write_bytes(data)
    assert index.track("f", path)

    middle = 7 * BLOCK + 100  # inside block 7
    with path.open("r+b") as f:
        f.seek(middle)
        f.write(b"changed")
    data[middle : middle + 7] = b"changed"

    ops = index.diff("f", path)

    assert len(ops) == 1
    (op,) = ops
    assert op.kind is OpKind.WRITE
    assert op.offset == 7 * BLOCK
    assert op.data == bytes(data[7 * BLOCK : 8 * BLOCK])


def test_unchanged_file_yields_nothing(tmp_path: Path, index: BlockIndex) -> None:
    path = tmp_path / "f"
    path.write_bytes(payload(MIB + 5))
    index.diff("f", path)
    assert index.diff("f", path) == []


def test_shrink_truncates_first(tmp_path: Path, index: BlockIndex) -> None:
    path = tmp_path / "f"
    data = payload(4 * BLOCK)
    path.write_bytes(data)
    index.track("f", path)
    os.truncate(path, BLOCK + 10)

    ops = index.diff("f", path)

    assert ops[0] == Op(OpKind.TRUNCATE, "f", size=BLOCK + 10)
    # The now-partial last block changed; nothing else is written.
    assert [(op.offset, len(op.data)) for op in writes(ops)] == [(BLOCK, 10)]
    assert [op.kind for op in ops].count(OpKind.TRUNCATE) == 1


def test_shrink_to_block_boundary_is_a_truncate_only(tmp_path: Path, index: BlockIndex) -> None:
    path = tmp_path / "f"
    path.write_bytes(payload(4 * BLOCK))
    index.track("f", path)
    os.truncate(path, 2 * BLOCK)
    assert index.diff("f", path) == [Op(OpKind.TRUNCATE, "f", size=2 * BLOCK)]


def test_grow_writes_the_tail_then_truncates(tmp_path: Path, index: BlockIndex) -> None:
    path = tmp_path / "f"
    data = payload(2 * BLOCK)
    path.write_bytes(data)
    index.track("f", path)
    tail = payload(BLOCK + 77, seed=1)
    with path.open("ab") as f:
        f.write(tail)

    ops = index.diff("f", path)

    assert [op.kind for op in ops] == [OpKind.WRITE, OpKind.TRUNCATE]
    assert ops[0].offset == 2 * BLOCK and ops[0].data == tail
    assert ops[1].size == 3 * BLOCK + 77


def test_grow_by_sparse_extension_is_exact(tmp_path: Path, index: BlockIndex) -> None:
    path = tmp_path / "f"
    path.write_bytes(payload(100))
    index.track("f", path)
    os.truncate(path, 3 * BLOCK + 1)

    ops = index.diff("f", path)

    assert ops[-1] == Op(OpKind.TRUNCATE, "f", size=3 * BLOCK + 1)
    assert sum(len(op.data) for op in writes(ops)) == 3 * BLOCK + 1  # every block is new


def test_adjacent_changed_blocks_merge_up_to_max_write(tmp_path: Path) -> None:
    index = BlockIndex(block_size=BLOCK, max_write=4 * BLOCK)
    path = tmp_path / "f"
    path.write_bytes(payload(10 * BLOCK))
    index.track("f", path)
    path.write_bytes(payload(10 * BLOCK, seed=9))  # every block differs

    ops = index.diff("f", path)

    assert [(op.offset, len(op.data)) for op in ops] == [
        (0, 4 * BLOCK),
        (4 * BLOCK, 4 * BLOCK),
        (8 * BLOCK, 2 * BLOCK),
    ]


def test_separate_changes_give_separate_writes(tmp_path: Path, index: BlockIndex) -> None:
    path = tmp_path / "f"
    path.write_bytes(payload(8 * BLOCK))
    index.track("f", path)
    with path.open("r+b") as f:
        for block in (1, 2, 5):
            f.seek(block * BLOCK)
            f.write(b"x")

    ops = index.diff("f", path)

    assert [(op.offset, len(op.data)) for op in ops] == [(BLOCK, 2 * BLOCK), (5 * BLOCK, BLOCK)]


def test_vanished_file_yields_nothing_and_is_forgotten(tmp_path: Path, index: BlockIndex) -> None:
    path = tmp_path / "f"
    path.write_bytes(payload(100))
    index.track("f", path)
    path.unlink()

    assert index.diff("f", path) == []
    assert "f" not in index


def test_vanished_file_can_be_kept(tmp_path: Path, index: BlockIndex) -> None:
    path = tmp_path / "f"
    path.write_bytes(payload(100))
    index.track("f", path)
    path.unlink()

    assert index.diff("f", path, forget_missing=False) == []
    assert "f" in index


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symlinks")
def test_symlink_and_directory_are_not_read(tmp_path: Path, index: BlockIndex) -> None:
    (tmp_path / "real").write_bytes(b"data")
    os.symlink("real", tmp_path / "link")
    (tmp_path / "dir").mkdir()
    assert index.diff("link", tmp_path / "link") == []
    assert index.diff("dir", tmp_path / "dir") == []
    assert "link" not in index and "dir" not in index


def test_diffs_replayed_on_a_copy_reproduce_the_file(tmp_path: Path, index: BlockIndex) -> None:
    """Random edits, each followed by a diff applied to a copy: the copy follows exactly."""
    rng = random.Random(42)
    source = tmp_path / "src"
    source.mkdir()
    path = source / "f"
    path.write_bytes(payload(300 * 1024, seed=3))
    replica = ReplicaWriter(tmp_path / "replica")
    for op in index.diff("f", path):
        replica.apply(op)
    for _ in range(40):
        size = path.stat().st_size
        action = rng.choice(["overwrite", "append", "shrink", "grow"])
        if action == "overwrite" and size:
            with path.open("r+b") as f:
                f.seek(rng.randrange(size))
                f.write(rng.randbytes(rng.randrange(1, 3 * BLOCK)))
        elif action == "append":
            with path.open("ab") as f:
                f.write(rng.randbytes(rng.randrange(1, 2 * BLOCK)))
        elif action == "shrink":
            os.truncate(path, rng.randrange(size + 1))
        else:
            os.truncate(path, size + rng.randrange(1, 2 * BLOCK))
        for op in index.diff("f", path):
            replica.apply(op)
        assert (tmp_path / "replica" / "f").read_bytes() == path.read_bytes()
