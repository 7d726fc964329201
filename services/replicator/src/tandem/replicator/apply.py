"""Apply operations to a replica folder, confined to it, resumable after a crash.

Every path is checked again here (``safe_path``) and resolved against the replica root
without following symlinks in its parent components, so nothing is ever written outside the
root, whatever a batch says. Progress is kept in ``<state>/applied`` (epoch, seq, index of the
next op), written after every operation that must not be repeated (rename, unlink, rmdir,
symlink) and at the end of each batch: a batch cut short by a crash resumes after the last of
those, so replaying never repeats one; the writes, truncates, creates and mode changes it may
replay leave the replica as they found it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path

from tandem.replicator.batch import Batch
from tandem.replicator.ops import Op, OpKind, PathRefusedError, safe_path

_POSITION = struct.Struct("<QQQ")


@dataclass(frozen=True, order=True)
class Position:
    """Where apply stands: ops of (epoch, seq) before ``next_op`` are applied."""

    epoch: int = 0
    seq: int = 0
    next_op: int = 0


class ApplyRefusedError(Exception):
    """An operation that must not be applied; the reason is in the message."""


#: Operations whose replay would not leave the replica as it was (a second rename or unlink
#: of the same name does something else, or fails). Every other kind, replayed in order from
#: any earlier point of the same batch, rewrites the same bytes, sizes and modes: progress is
#: recorded after these and at the end of a batch, not after every op.
NOT_REPEATABLE = frozenset({OpKind.UNLINK, OpKind.RMDIR, OpKind.RENAME, OpKind.SYMLINK})


class ReplicaWriter:
    """Applies single operations under ``root``.

    Within a batch (``open_batch`` .. ``close_batch``) the checked local path and an open
    descriptor of each written file are kept, so that a run of writes to one file costs one
    ``open``; both are forgotten before any operation that changes names (rename, unlink,
    rmdir, symlink), which could change what a path leads to."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._paths: dict[str, Path] = {}
        self._fds: dict[str, int] = {}

    def local(self, rel: str) -> Path:
        """The replica path of ``rel``; refuses a path whose parents leave the root."""
        known = self._paths.get(rel)
        if known is not None:
            return known
        clean = safe_path(rel)
        parent = self.root
        for part in Path(clean).parts[:-1]:
            parent = parent / part
            if parent.is_symlink():
                raise PathRefusedError(f"path {rel!r} passes through the symlink {part!r}")
        path = parent / Path(clean).name
        self._paths[rel] = path
        return path

    def apply(self, op: Op) -> None:
        try:
            self._apply(op)
        except PathRefusedError as exc:
            raise ApplyRefusedError(str(exc)) from None

    def close_batch(self) -> None:
        """Close what the batch kept open (also when it stopped at a failing op)."""
        fds, self._fds, self._paths = self._fds, {}, {}
        for fd in fds.values():
            os.close(fd)

    def _file(self, rel: str, path: Path) -> int:
        fd = self._fds.get(rel)
        if fd is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            self._fds[rel] = fd
        return fd

    def _apply(self, op: Op) -> None:
        kind = op.kind
        if kind in NOT_REPEATABLE:
            self.close_batch()  # names are about to change: nothing cached stays valid
        path = self.local(op.path)
        if kind is OpKind.WRITE:
            _write_all(self._file(op.path, path), op.data, op.offset)
        elif kind is OpKind.TRUNCATE:
            os.ftruncate(self._file(op.path, path), op.size)
        elif kind is OpKind.CREATE:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, op.mode & 0o7777 or 0o644)
            os.close(fd)
            os.chmod(path, op.mode & 0o7777 or 0o644, follow_symlinks=False)
        elif kind is OpKind.MKDIR:
            path.mkdir(mode=op.mode & 0o7777 or 0o755, parents=True, exist_ok=True)
            os.chmod(path, op.mode & 0o7777 or 0o755)  # mkdir's mode is cut by the umask
        elif kind is OpKind.UNLINK:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        elif kind is OpKind.RMDIR:
            _rmtree_if_dir(path)
        elif kind is OpKind.RENAME:
            target = self.local(op.target)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
        elif kind is OpKind.SYMLINK:
            path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            os.symlink(op.target, path)
        elif kind is OpKind.CHMOD:
            if not path.is_symlink():
                os.chmod(path, op.mode & 0o7777)
        elif kind is OpKind.CHOWN:
            os.chown(path, op.uid, op.gid, follow_symlinks=False)
        elif kind is OpKind.SET_TIMES:
            os.utime(path, ns=(op.atime_ns, op.mtime_ns), follow_symlinks=False)
        elif kind is OpKind.FSYNC:
            if path.is_file() and not path.is_symlink():
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)


def _fsync_path(path: Path) -> None:
    """fsync a file or folder if it (still) exists; symlinks and the rest are left alone."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return  # gone since (renamed, unlinked), or a symlink: nothing to make durable
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """pwrite until every byte is written: a short write (a filling disk) is not success;
    the next call then raises ENOSPC and apply pauses at this very operation."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view, offset = view[n:], offset + n


def _rmtree_if_dir(path: Path) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(mode):
        raise ApplyRefusedError(f"rmdir of {path.name!r}, which is not a directory")
    try:
        path.rmdir()
    except OSError as exc:
        if exc.errno != errno.ENOTEMPTY:
            raise
        raise ApplyRefusedError(f"rmdir of {path.name!r}: directory not empty") from None


class BatchApplier:
    """Applies whole batches in order and remembers, per operation, how far it got."""

    def __init__(self, root: Path, state_dir: Path) -> None:
        self.writer = ReplicaWriter(root)
        state_dir.mkdir(parents=True, exist_ok=True)
        self._state_path = state_dir / "applied"
        self._touched: set[str] = set()
        self._fd = os.open(self._state_path, os.O_RDWR | os.O_CREAT, 0o600)
        raw = os.pread(self._fd, _POSITION.size, 0)
        self.position = (
            Position(*_POSITION.unpack(raw)) if len(raw) == _POSITION.size else Position()
        )

    def close(self) -> None:
        os.close(self._fd)

    def done(self, epoch: int, seq: int) -> bool:
        """True when batch (epoch, seq) is wholly applied already."""
        p = self.position
        return (epoch, seq) < (p.epoch, p.seq) or (
            (epoch, seq) == (p.epoch, p.seq) and p.next_op == _ALL
        )

    def apply(self, batch: Batch) -> int:
        """Apply the ops not yet applied; return how many were applied now."""
        if self.done(batch.epoch, batch.seq):
            return 0
        p = self.position
        start = p.next_op if (batch.epoch, batch.seq) == (p.epoch, p.seq) else 0
        try:
            for index in range(start, len(batch.ops)):
                op = batch.ops[index]
                try:
                    self.writer.apply(op)
                    self._touched.add(op.target if op.kind is OpKind.RENAME else op.path)
                except (ApplyRefusedError, OSError) as exc:
                    exc.op_index = index  # type: ignore[union-attr]  # for skip_failed
                    raise
                if op.kind in NOT_REPEATABLE:
                    # Written (not fsynced): a killed process resumes after this op and
                    # replays only repeatable ones.
                    self._record(Position(batch.epoch, batch.seq, index + 1))
        finally:
            self.writer.close_batch()
        self._record(Position(batch.epoch, batch.seq, _ALL))
        return len(batch.ops) - start

    def skip_failed(self, batch: Batch, index: int) -> None:
        """Record op ``index`` of ``batch`` as done without applying it (during verify &
        synchronize only: the verify repairs whatever the op would have changed)."""
        nxt = index + 1
        self._record(Position(batch.epoch, batch.seq, _ALL if nxt >= len(batch.ops) else nxt))

    def sync(self) -> None:
        """Make the data and the position durable (called after a group of batches): fsync
        what the batches touched and their folders, then the position."""
        touched, self._touched = self._touched, set()
        folders = {str(Path(p).parent) for p in touched}
        for rel in sorted(touched):
            _fsync_path(self.writer.root / rel)
        for rel in sorted(folders):
            _fsync_path(self.writer.root / rel)
        os.fsync(self._fd)

    def _record(self, position: Position) -> None:
        os.pwrite(self._fd, _POSITION.pack(position.epoch, position.seq, position.next_op), 0)
        self.position = position


#: ``next_op`` value meaning "every op of this batch is applied".
_ALL = 2**63 - 1
