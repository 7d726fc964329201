"""The FUSE passthrough filesystem behind the ``intercept`` capture backend (Linux).

Every call is passed through to the protected source folder, relative to a directory file
descriptor opened before the mount (so the mount may cover the source folder itself). Every
mutating call runs under one lock: do it on the source, then, only if it succeeded, submit the
``Op`` to the sink, then release the lock. The order of submitted ops is therefore the order in
which the operations took effect on the source. Reads take no lock.

The daemon runs as the agent's user (root). A call from another user (an application with a
``user`` of its own, on a mount with ``allow_other``) that creates a file, directory or symlink
gives the new entry to that user, so the application owns what it creates, and journals a
CHOWN right after the entry's op (in the same lock) so that the replicas own it alike.

Imported lazily by ``tandem.replicator.intercept`` because importing ``mfusepy`` loads libfuse
(and raises without it).
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from typing import Any

import mfusepy

from tandem.replicator.capture import OpSink
from tandem.replicator.ops import Op, OpKind, PathRefusedError, safe_path

log = logging.getLogger(__name__)

# utimensat(2) special values; libfuse passes them as (tv_sec=0, tv_nsec=value), which
# mfusepy (use_ns) turns into the plain integer. A real time of exactly 1.07 s after the epoch
# is indistinguishable from them and is treated as "now" / "omit".
UTIME_NOW = (1 << 30) - 1
UTIME_OMIT = (1 << 30) - 2
RENAME_NOREPLACE = 1  # renameat2(2) flag

# Flags never passed to the source on open: creation belongs to create(); O_APPEND is dropped
# so pwrite() writes at the offset the kernel sent (which is the offset recorded in the op);
# O_DIRECT would need aligned buffers.
_OPEN_DROP = os.O_CREAT | os.O_EXCL | os.O_NOCTTY | os.O_APPEND | getattr(os, "O_DIRECT", 0)
_OPEN_ADD = os.O_NOFOLLOW | os.O_CLOEXEC
_STAT_FIELDS = (
    "st_mode", "st_ino", "st_nlink", "st_uid", "st_gid", "st_size", "st_rdev", "st_blocks",
    "st_blksize",
)  # fmt: skip
_STATVFS_FIELDS = (
    "f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree", "f_favail",
    "f_flag", "f_namemax",
)  # fmt: skip


def mount_options(fsname: str) -> dict[str, Any]:
    """Keyword options for ``PassthroughFuse``: foreground, multithreaded, no allow_other.

    Multithreaded: a read is never queued behind a write waiting in ``sink.submit``
    (back-pressure) or behind a slow fsync. The order of changes is fixed by the ops lock, not
    by the loop, and libfuse's path locks keep a path stable for the length of a call.
    Who may use the mount is ``sharing_options``'s part.
    """
    options: dict[str, Any] = {
        "foreground": True,
        "nothreads": False,
        "fsname": fsname,
        "use_ino": True,
        # Unlink at once even if the file is open; without it libfuse renames the file to
        # .fuse_hiddenN on the source (and RELEASE is asynchronous, so that races close()).
        "hard_remove": True,
    }
    if mfusepy.fuse_version_major == 3:
        # libfuse 3.14's own default for idle threads trips its range check ("Ignoring
        # invalid max threads value 4294967295"); an explicit value keeps it quiet.
        options["max_idle_threads"] = 8
    return options


def sharing_options(allow_other: bool) -> dict[str, Any]:
    """Who may use the mount. Without ``allow_other``, only the mounting user (the kernel
    refuses everyone else, so the daemon's own checks are enough). With it, every user, and
    ``default_permissions`` too: the kernel then checks each caller against the owner and mode
    of the files; without it every caller would get the daemon's (root's) access."""
    if not allow_other:
        return {}
    return {"allow_other": True, "default_permissions": True}


def _local(path: str) -> str:
    """``path`` (as FUSE gives it, "/a/b") relative to the root descriptor ("." for the root)."""
    return path.lstrip("/") or "."


class PassthroughOps(mfusepy.Operations):
    """mfusepy operations: pass through to ``root_fd``, submit each change to ``sink``."""

    use_ns = True  # utimens gets integer nanoseconds, getattr returns them

    def __init__(
        self, root_fd: int, sink: OpSink, on_init: Callable[[], None] | None = None
    ) -> None:
        self._root = root_fd
        self._sink = sink
        self._lock = threading.Lock()
        self._on_init = on_init
        self._euid = os.geteuid()
        self._chown_warned = False
        #: Set when the sink raised: the source then holds a change the journal lacks.
        self.broken: BaseException | None = None

    @property
    def mutation_lock(self) -> threading.Lock:
        """The lock every mutating call holds while it changes the source and submits."""
        return self._lock

    def init(self, path: str) -> None:
        """Called by the FUSE loop before it serves the first request."""
        if self._on_init is not None:
            self._on_init()

    # -- helpers ------------------------------------------------------------------------------

    def _rel(self, path: str | None) -> str:
        """The journal path of ``path``; EINVAL for a name a replica could not reproduce."""
        if path is None:  # an open file that was unlinked: only fh-based calls get here
            raise mfusepy.FuseOSError(errno.ENOENT)
        return _journal_path(path)

    def _meta_rel(self, path: str | None) -> str | None:
        """Like ``_rel`` but None for the root itself, whose metadata is not replicated."""
        if path is not None and _local(path) == ".":
            return None
        return self._rel(path)

    def _emit(self, op: Op) -> None:
        """Submit ``op`` (the lock is held). A sink failure is an I/O error for the caller."""
        try:
            self._sink.submit(op)
        except Exception as exc:
            self.broken = exc
            log.critical(
                "intercept: the sink refused %s %r, already applied to the source",
                op.kind.name, op.path, exc_info=True,
            )  # fmt: skip
            raise mfusepy.FuseOSError(errno.EIO) from None

    def _lstat(self, local: str) -> os.stat_result:
        return os.stat(local, dir_fd=self._root, follow_symlinks=False)

    def _caller(self) -> tuple[int, int] | None:
        """The (uid, gid) of the calling process when it is not the daemon's user (only with
        ``allow_other``), else None: the entries it creates must become its own."""
        uid, gid, _pid = mfusepy.fuse_get_context()
        return None if uid == self._euid else (uid, gid)

    def _give(self, rel: str, caller: tuple[int, int] | None, fd: int | None = None) -> None:
        """Give the entry ``rel`` just created to ``caller`` (a no-op for the daemon's own
        user) and journal it, the lock held. A setgid parent directory keeps its group, as a
        local filesystem would; a symlink is changed itself, never its target."""
        if caller is None:
            return
        uid, gid = caller
        parent = os.path.dirname(rel) or "."
        try:
            if self._lstat(parent).st_mode & stat.S_ISGID:
                gid = -1  # the group the new entry inherited
            if fd is not None:
                os.fchown(fd, uid, gid)
            else:
                os.chown(rel, uid, gid, dir_fd=self._root, follow_symlinks=False)
            st = self._lstat(rel)
        except OSError as exc:
            # The entry exists (and is journalled): the call succeeded; only the owner is off.
            if not self._chown_warned:
                self._chown_warned = True
                log.warning(
                    "intercept: cannot give new %r to uid %d: %s (entries other users create "
                    "stay the daemon's; run the agent as root)", rel, uid, exc,
                )  # fmt: skip
            return
        self._emit(Op(OpKind.CHOWN, rel, uid=st.st_uid, gid=st.st_gid))

    # -- reads (no lock) ------------------------------------------------------------------------

    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, Any]:
        if fh is not None:
            st = os.fstat(fh)
        elif path is None:
            raise mfusepy.FuseOSError(errno.ENOENT)
        else:
            st = self._lstat(_local(path))
        attrs: dict[str, Any] = {key: getattr(st, key) for key in _STAT_FIELDS}
        attrs.update(st_atime=st.st_atime_ns, st_mtime=st.st_mtime_ns, st_ctime=st.st_ctime_ns)
        return attrs

    def readdir(self, path: str, fh: int) -> list[tuple[str, dict[str, int], int]]:
        # Entries carry their inode number: with use_ino, a bare name would be listed with
        # inode 0, and readdir(3) skips such entries (mfusepy fills a zeroed stat for names).
        # A descriptor of our own: scanning a shared one would share its offset.
        fd = os.open(_local(path), os.O_RDONLY | os.O_DIRECTORY | _OPEN_ADD, dir_fd=self._root)
        try:
            ino = os.fstat(fd).st_ino
            entries = [(name, {"st_ino": ino, "st_mode": stat.S_IFDIR}, 0) for name in (".", "..")]
            with os.scandir(fd) as scan:
                for entry in scan:
                    attrs = {"st_ino": entry.inode(), "st_mode": _entry_type(entry)}
                    entries.append((entry.name, attrs, 0))
            return entries
        finally:
            os.close(fd)

    def readlink(self, path: str) -> str:
        return os.readlink(_local(path), dir_fd=self._root)

    def access(self, path: str, amode: int) -> int:
        if not os.access(_local(path), amode, dir_fd=self._root):
            raise mfusepy.FuseOSError(errno.EACCES)
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        st = os.fstatvfs(self._root)
        return {key: getattr(st, key) for key in _STATVFS_FIELDS}

    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        return os.pread(fh, size, offset)

    def flush(self, path: str | None, fh: int) -> int:
        os.close(os.dup(fh))  # what close(2) of the application's descriptor would do
        return 0

    def release(self, path: str | None, fh: int) -> int:
        os.close(fh)
        return 0

    # -- open / create --------------------------------------------------------------------------

    def open(self, path: str, flags: int) -> int:
        oflags = (flags & ~_OPEN_DROP) | _OPEN_ADD
        if flags & os.O_ACCMODE == os.O_RDONLY and not flags & os.O_TRUNC:
            return os.open(_local(path), oflags, dir_fd=self._root)
        rel = self._rel(path)  # refuse writing to a name the journal cannot carry
        if not flags & os.O_TRUNC:
            return os.open(rel, oflags, dir_fd=self._root)
        # libfuse 3 asks for atomic O_TRUNC: the truncation arrives here, not as a setattr.
        with self._lock:
            fd = os.open(rel, oflags, dir_fd=self._root)
            self._emit_or_close(fd, Op(OpKind.TRUNCATE, rel, size=0))
        return fd

    def create(self, path: str, mode: int, flags: int) -> int:
        rel = self._rel(path)
        caller = self._caller()
        oflags = (flags & ~_OPEN_DROP) | _OPEN_ADD
        perm = mode & 0o7777
        with self._lock:
            try:
                fd = os.open(rel, oflags | os.O_CREAT | os.O_EXCL, perm, dir_fd=self._root)
            except FileExistsError:
                if flags & os.O_EXCL:
                    raise
                # Created meanwhile (a stale negative dentry): a plain open of the existing file.
                fd = os.open(rel, oflags, dir_fd=self._root)
                if flags & os.O_TRUNC:
                    self._emit_or_close(fd, Op(OpKind.TRUNCATE, rel, size=0))
                return fd
            # The kernel already applied the application's umask to ``mode``; ours must not
            # narrow it further, so the source gets exactly the mode the application asked for.
            st = os.fstat(fd)
            if st.st_mode & 0o777 != perm & 0o777:
                try:
                    os.fchmod(fd, (st.st_mode & 0o7000) | (perm & 0o777))
                    st = os.fstat(fd)
                except OSError as exc:
                    log.warning("intercept: cannot set the mode of new %r: %s", rel, exc)
            self._emit_or_close(fd, Op(OpKind.CREATE, rel, mode=stat.S_IMODE(st.st_mode)))
            try:
                self._give(rel, caller, fd)
            except BaseException:
                os.close(fd)
                raise
        return fd

    def _emit_or_close(self, fd: int, op: Op) -> None:
        try:
            self._emit(op)
        except BaseException:
            os.close(fd)
            raise

    # -- data -----------------------------------------------------------------------------------

    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        # path is None for a file unlinked while open: the tree no longer holds it.
        rel = None if path is None else self._rel(path)
        with self._lock:
            written = os.pwrite(fh, data, offset)
            if rel is not None and written > 0:
                chunk = data if written == len(data) else data[:written]
                self._emit(Op(OpKind.WRITE, rel, offset=offset, data=chunk))
        return written

    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        rel = None if path is None and fh is not None else self._rel(path)
        with self._lock:
            if fh is not None:
                os.ftruncate(fh, length)
            else:
                assert rel is not None
                fd = os.open(rel, os.O_WRONLY | _OPEN_ADD, dir_fd=self._root)
                try:
                    os.ftruncate(fd, length)
                finally:
                    os.close(fd)
            if rel is not None:
                self._emit(Op(OpKind.TRUNCATE, rel, size=length))
        return 0

    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        # The sync itself runs outside the lock (it may take long and would stall every writer).
        # Ordering still holds: every write it covers was submitted before it started, and
        # FSYNC is submitted after it returned; later writes listed before FSYNC are harmless.
        if datasync:
            os.fdatasync(fh)
        else:
            os.fsync(fh)
        if path is not None:
            try:
                rel = self._rel(path)
            except OSError:
                return 0  # a name that was never replicated: nothing to make durable there
            with self._lock:
                self._emit(Op(OpKind.FSYNC, rel))
        return 0

    # -- namespace ------------------------------------------------------------------------------

    def mkdir(self, path: str, mode: int) -> int:
        rel = self._rel(path)
        caller = self._caller()
        perm = mode & 0o7777
        with self._lock:
            os.mkdir(rel, perm, dir_fd=self._root)
            st = self._lstat(rel)
            if st.st_mode & 0o777 != perm & 0o777:  # our umask, see create()
                try:
                    os.chmod(rel, (st.st_mode & 0o7000) | (perm & 0o777), dir_fd=self._root)
                    st = self._lstat(rel)
                except OSError as exc:
                    log.warning("intercept: cannot set the mode of new directory %r: %s", rel, exc)
            self._emit(Op(OpKind.MKDIR, rel, mode=stat.S_IMODE(st.st_mode)))
            self._give(rel, caller)
        return 0

    def unlink(self, path: str) -> int:
        rel = self._rel(path)
        with self._lock:
            os.unlink(rel, dir_fd=self._root)
            self._emit(Op(OpKind.UNLINK, rel))
        return 0

    def rmdir(self, path: str) -> int:
        rel = self._rel(path)
        with self._lock:
            os.rmdir(rel, dir_fd=self._root)
            self._emit(Op(OpKind.RMDIR, rel))
        return 0

    def symlink(self, path: str, target: str) -> int:
        """Create the link ``path`` whose content is ``target`` (mfusepy's argument order)."""
        rel = self._rel(path)
        caller = self._caller()
        with self._lock:
            os.symlink(target, rel, dir_fd=self._root)
            self._emit(Op(OpKind.SYMLINK, rel, target=target))
            self._give(rel, caller)
        return 0

    def rename(self, old: str, new: str, flags: int = 0) -> int:
        rel_old, rel_new = self._rel(old), self._rel(new)
        if flags & ~RENAME_NOREPLACE:  # RENAME_EXCHANGE / WHITEOUT have no journal form
            raise mfusepy.FuseOSError(errno.EINVAL)
        with self._lock:
            # Every change to the source goes through this lock, so check-then-rename is atomic.
            if flags & RENAME_NOREPLACE and _exists(self._root, rel_new):
                raise mfusepy.FuseOSError(errno.EEXIST)
            os.rename(rel_old, rel_new, src_dir_fd=self._root, dst_dir_fd=self._root)
            self._emit(Op(OpKind.RENAME, rel_old, target=rel_new))
        return 0

    def link(self, target: str, source: str) -> int:
        raise mfusepy.FuseOSError(errno.ENOTSUP)  # hard links have no journal form

    def mknod(self, path: str, mode: int, dev: int) -> int:
        raise mfusepy.FuseOSError(errno.ENOTSUP)  # neither have devices, FIFOs and sockets

    # -- metadata -------------------------------------------------------------------------------
    # The root's own metadata is changed on the source but not journalled: a journal path never
    # names the root (the target's replica folder keeps its own owner, mode and times).

    def chmod(self, path: str | None, mode: int) -> int:
        rel = self._meta_rel(path)
        local = rel or "."
        with self._lock:
            if stat.S_ISLNK(self._lstat(local).st_mode):
                raise mfusepy.FuseOSError(errno.EOPNOTSUPP)  # never follow a link
            os.chmod(local, mode & 0o7777, dir_fd=self._root)
            if rel is not None:
                self._emit(Op(OpKind.CHMOD, rel, mode=stat.S_IMODE(self._lstat(rel).st_mode)))
        return 0

    def chown(self, path: str | None, uid: int, gid: int) -> int:
        rel = self._meta_rel(path)
        local = rel or "."
        with self._lock:
            os.chown(local, uid, gid, dir_fd=self._root, follow_symlinks=False)
            if rel is not None:
                self._emit(Op(OpKind.CHOWN, rel, uid=uid, gid=gid))
        return 0

    def utimens(self, path: str | None, times: tuple[int, int] | None = None) -> int:
        rel = self._meta_rel(path)
        local = rel or "."
        with self._lock:
            if times is None:
                os.utime(local, dir_fd=self._root, follow_symlinks=False)
            else:
                atime, mtime = times
                if {atime, mtime} & {UTIME_NOW, UTIME_OMIT}:
                    st, now = self._lstat(local), time.time_ns()
                    atime = _resolve_time(atime, st.st_atime_ns, now)
                    mtime = _resolve_time(mtime, st.st_mtime_ns, now)
                os.utime(local, ns=(atime, mtime), dir_fd=self._root, follow_symlinks=False)
            if rel is not None:
                st = self._lstat(rel)  # journal what the source holds now (exact values)
                atime, mtime = st.st_atime_ns, st.st_mtime_ns
                self._emit(Op(OpKind.SET_TIMES, rel, atime_ns=atime, mtime_ns=mtime))
        return 0


def _entry_type(entry: os.DirEntry[str]) -> int:
    """The file-type bits of a directory entry, from its d_type (0 when unknown)."""
    if entry.is_symlink():
        return stat.S_IFLNK
    if entry.is_dir(follow_symlinks=False):
        return stat.S_IFDIR
    if entry.is_file(follow_symlinks=False):
        return stat.S_IFREG
    return 0


def _resolve_time(value: int, current: int, now: int) -> int:
    if value == UTIME_OMIT:
        return current
    if value == UTIME_NOW:
        return now
    return value


def _exists(root_fd: int, rel: str) -> bool:
    try:
        os.stat(rel, dir_fd=root_fd, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True


class PassthroughFuse(mfusepy.FUSE):
    """mfusepy's ``FUSE`` passing on two libfuse 3 arguments that mfusepy 3.1 drops.

    - ``truncate``: the file handle, so ftruncate(2) acts on the open file (also once unlinked);
    - ``rename``: the renameat2(2) flags, so RENAME_NOREPLACE is honoured, not ignored.
    """

    def _decode(self, path: bytes | None) -> str | None:
        return None if path is None else path.decode(self.encoding, self.errors)

    def truncate_fuse_3(self, path: bytes | None, length: int, fip: Any) -> int:
        fh = fip.contents.fh if fip else None
        result: int = self.operations.truncate(self._decode(path), length, fh)
        return result

    def rename_fuse_3(self, old: bytes, new: bytes, flags: int) -> int:
        result: int = self.operations.rename(self._decode(old), self._decode(new), flags)
        return result


@functools.lru_cache(maxsize=4096)
def _journal_path(path: str) -> str:
    """``_rel``'s check, remembered per path string (it depends on nothing else): a run of
    small writes to one file pays for it once. A refusal is not remembered (it raises)."""
    rel = path.lstrip("/")
    try:
        clean = safe_path(rel)
    except PathRefusedError as exc:
        log.warning("intercept: refusing a change to %r: %s", path, exc)
        raise mfusepy.FuseOSError(errno.EINVAL) from None
    if clean != rel:  # e.g. a backslash, which the journal reads as a separator
        log.warning("intercept: refusing a change to %r: the journal would name it %r", path, clean)
        raise mfusepy.FuseOSError(errno.EINVAL)
    return rel
