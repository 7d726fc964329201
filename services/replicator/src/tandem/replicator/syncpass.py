"""One pass of verify & synchronize on the source side (blocking file work, run in a thread).

Each source file is read and compared while the capture is held exclusive for that file, so
no live write of the application can slip between reading a block and journaling it: the
fix and the live operations reach the replica in the order they happened.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from tandem.replicator.manifest import BLOCK, Entry, SyncStats, entry_of, file_ops, removals, same
from tandem.replicator.ops import Op, OpKind

Progress = Callable[[SyncStats, int], None]


def source_kinds(root: Path) -> dict[str, Entry]:
    """Paths and kinds (no hashes yet: those are read under the lock, per file). The kinds
    come from the directory entries themselves: no stat per file (69,000 files: 1.4 s)."""
    out: dict[str, Entry] = {}
    pending = [""]
    while pending:
        rel_dir = pending.pop()
        try:
            entries = list(os.scandir(root / rel_dir if rel_dir else root))
        except (FileNotFoundError, NotADirectoryError):
            continue  # removed (or replaced) since it was listed: the next pass sees it
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                if entry.is_symlink():
                    out[rel] = Entry("link")
                elif entry.is_dir(follow_symlinks=False):
                    out[rel] = Entry("dir")
                    pending.append(rel)
                elif entry.is_file(follow_symlinks=False):
                    out[rel] = Entry("file")
            except FileNotFoundError:
                continue
    return out


def sync_pass(
    source_root: Path,
    replica: dict[str, Entry],
    submit: Callable[[Op], None],
    exclusive: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
    *,
    block_size: int = BLOCK,
    progress: Progress = lambda stats, total: None,
    changed_since: float | None = None,
) -> SyncStats:
    """Fix every path where the source differs from ``replica``; ``changed_since`` (a
    ``time.time()``): also count the differing files modified after it (``stats.recent``)."""
    stats = SyncStats()
    kinds = source_kinds(source_root)
    with exclusive():
        for op in removals(kinds, replica):
            submit(op)
            stats.out_of_sync += 1
    for path in sorted(
        (p for p, e in kinds.items() if e.kind == "dir"), key=lambda p: p.count("/")
    ):
        with exclusive():
            have = entry_of(source_root / path, block_size)
            if have is None or have.kind != "dir":
                continue
            theirs = replica.get(path)
            fixed = False
            if theirs is None or theirs.kind != "dir":
                submit(Op(OpKind.MKDIR, path, mode=have.mode))
                fixed = True
            elif theirs.mode != have.mode:
                submit(Op(OpKind.CHMOD, path, mode=have.mode))
                fixed = True
            if have.owner_differs(theirs):
                submit(Op(OpKind.CHOWN, path, uid=have.uid, gid=have.gid))
                fixed = True
            stats.out_of_sync += fixed
        stats.checked += 1
    others = sorted(p for p, e in kinds.items() if e.kind != "dir")
    for path in others:
        with exclusive():
            have = entry_of(source_root / path, block_size)
            theirs = replica.get(path)
            if have is not None and not same(have, theirs):
                stats.out_of_sync += 1
                if changed_since is not None and _modified_after(source_root / path, changed_since):
                    stats.recent += 1
                for op in _fix(source_root, path, have, theirs, block_size):
                    stats.bytes_sent += len(op.data)
                    submit(op)
        stats.checked += 1
        progress(stats, len(kinds))
    return stats


def _fix(root: Path, path: str, have: Entry, theirs: Entry | None, block_size: int) -> list[Op]:
    ops: list[Op] = []
    if have.kind == "link":
        if theirs is None or theirs.kind != "link" or theirs.target != have.target:
            ops.append(Op(OpKind.SYMLINK, path, target=have.target))
            theirs = None  # a new link: created by the target's own user
    elif not (theirs is not None and theirs.kind == "file" and theirs.size == have.size
              and theirs.blocks == have.blocks and theirs.mode == have.mode):  # fmt: skip
        ops += file_ops(root, path, have, theirs, block_size)
        if theirs is None or theirs.kind != "file":
            theirs = None  # a new file
    if have.owner_differs(theirs):
        ops.append(Op(OpKind.CHOWN, path, uid=have.uid, gid=have.gid))
    return ops


def _modified_after(path: Path, when: float) -> bool:
    try:
        return path.lstat().st_mtime >= when
    except OSError:
        return False
