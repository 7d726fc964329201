"""Per-file block hashes: which parts of a file changed since it was last sent.

The ``watch`` capture backend only learns *that* a file changed, not *where*. ``BlockIndex``
keeps, per file (relative path), its size and the xxh3_64 digest of every fixed-size block
(64 KiB by default). ``diff`` reads the file again, hashes it and returns the operations that
bring a copy holding the indexed content to the current one: WRITEs of the changed or new
blocks only (adjacent changed blocks merged, at most ``max_write`` bytes per WRITE) and a
TRUNCATE to the exact new size when the size changed (first when the file shrank, so the copy
is never left longer, last when it grew). The index then holds the new content.

Reading is portable (no ``pread``), never follows a symlink where the platform can refuse it
(``O_NOFOLLOW``) and never blocks on a FIFO (``O_NONBLOCK``). A file that vanished, or is no
longer a regular file, yields no operation.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

import xxhash

from tandem.replicator.ops import Op, OpKind

logger = logging.getLogger(__name__)

DEFAULT_BLOCK_SIZE = 64 * 1024
DEFAULT_MAX_WRITE = 4 * 1024 * 1024

_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_BINARY", 0)
)
#: errno values meaning "there is no regular file at this path any more".
_GONE = {errno.ENOENT, errno.ENOTDIR, errno.ELOOP}


@dataclass(slots=True)
class FileBlocks:
    """What the index knows of one file: its size and one digest per block."""

    size: int = 0
    digests: array[int] = field(default_factory=lambda: array("Q"))


class BlockIndex:
    """Block digests per relative path. Not thread-safe: one owner thread."""

    def __init__(
        self, block_size: int = DEFAULT_BLOCK_SIZE, max_write: int = DEFAULT_MAX_WRITE
    ) -> None:
        if block_size <= 0:
            raise ValueError("block_size must be positive")
        self.block_size = block_size
        # A WRITE carries whole blocks: at least one, at most max_write bytes.
        self.max_write = max(block_size, max_write - max_write % block_size)
        self._files: dict[str, FileBlocks] = {}

    def __contains__(self, path: object) -> bool:
        return path in self._files

    def __len__(self) -> int:
        return len(self._files)

    def get(self, path: str) -> FileBlocks | None:
        return self._files.get(path)

    def paths(self) -> list[str]:
        return list(self._files)

    def forget(self, path: str) -> None:
        self._files.pop(path, None)

    def rename(self, old: str, new: str) -> None:
        """Move the entry of ``old`` to ``new`` (replacing ``new``'s); no-op if ``old`` unknown."""
        entry = self._files.pop(old, None)
        if entry is not None:
            self._files[new] = entry

    def set_empty(self, path: str) -> None:
        """Record ``path`` as an empty file (just created on the copy)."""
        self._files[path] = FileBlocks()

    def track(self, path: str, abs_path: str | os.PathLike[str]) -> bool:
        """Hash the file and record it as it is now, without producing operations.

        Returns False (and forgets ``path``) when there is no regular file to read.
        """
        opened = self._open(abs_path)
        if opened is None:
            self.forget(path)
            return False
        handle, expected = opened
        digests: array[int] = array("Q")
        size = 0
        with handle:
            for block in self._blocks(handle, expected):
                digests.append(xxhash.xxh3_64_intdigest(block))
                size += len(block)
        self._files[path] = FileBlocks(size, digests)
        return True

    def diff(
        self, path: str, abs_path: str | os.PathLike[str], *, forget_missing: bool = True
    ) -> list[Op]:
        """The operations bringing the indexed content of ``path`` to the current one.

        An unknown ``path`` counts as an empty file. When the file vanished (or is not a regular
        file) the result is empty and ``path`` is forgotten, unless ``forget_missing`` is False
        (the caller then learns about the removal some other way and keeps the entry).
        """
        return list(self.iter_diff(path, abs_path, forget_missing=forget_missing))

    def iter_diff(
        self, path: str, abs_path: str | os.PathLike[str], *, forget_missing: bool = True
    ) -> Iterator[Op]:
        """``diff`` as a generator: holds at most one WRITE's data in memory at a time.

        The index is updated only once the generator is exhausted; an abandoned iteration leaves
        the old entry, so the next diff sends those blocks again (never fewer).
        """
        opened = self._open(abs_path)
        if opened is None:
            if forget_missing:
                self.forget(path)
            return
        handle, expected = opened
        old = self._files.get(path) or FileBlocks()
        old_digests = old.digests
        digests: array[int] = array("Q")
        size = 0
        run: list[bytes] = []
        run_offset = 0
        run_len = 0
        truncated_to = -1
        with handle:
            if expected < old.size:
                # Shrink first: the copy never holds bytes past the new end.
                truncated_to = expected
                yield Op(OpKind.TRUNCATE, path, size=expected)
            for index, block in enumerate(self._blocks(handle, expected)):
                digest = xxhash.xxh3_64_intdigest(block)
                digests.append(digest)
                offset = size
                size += len(block)
                changed = index >= len(old_digests) or old_digests[index] != digest
                if changed and run and run_len + len(block) > self.max_write:
                    yield Op(OpKind.WRITE, path, offset=run_offset, data=b"".join(run))
                    run, run_len = [], 0
                if changed:
                    if not run:
                        run_offset = offset
                    run.append(block)
                    run_len += len(block)
                elif run:
                    yield Op(OpKind.WRITE, path, offset=run_offset, data=b"".join(run))
                    run, run_len = [], 0
            if run:
                yield Op(OpKind.WRITE, path, offset=run_offset, data=b"".join(run))
        if size != old.size and size != truncated_to:
            # Grown (the WRITEs covered the tail) or changed again while being read.
            yield Op(OpKind.TRUNCATE, path, size=size)
        self._files[path] = FileBlocks(size, digests)

    def _open(self, abs_path: str | os.PathLike[str]) -> tuple[BinaryIO, int] | None:
        """The open file and its size, or None when there is no regular file to read."""
        try:
            if not getattr(os, "O_NOFOLLOW", 0) and not stat.S_ISREG(os.lstat(abs_path).st_mode):
                return None
            fd = os.open(abs_path, _OPEN_FLAGS)
        except OSError as exc:
            if exc.errno in _GONE:
                return None
            raise
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                os.close(fd)
                return None
            return os.fdopen(fd, "rb", buffering=0), st.st_size
        except BaseException:
            os.close(fd)
            raise

    def _blocks(self, handle: BinaryIO, expected: int) -> Iterator[bytes]:
        """Blocks of the file up to ``expected`` bytes (fewer if it shrinks meanwhile).

        Bytes appended after the size was taken are left for the next diff: whatever appended
        them also caused the event that triggers it.
        """
        remaining = expected
        while remaining > 0:
            want = min(self.block_size, remaining)
            block = handle.read(want)
            if not block:
                return
            while len(block) < want:
                more = handle.read(want - len(block))
                if not more:
                    break
                block += more
            remaining -= len(block)
            yield block
            if len(block) < want:
                return
