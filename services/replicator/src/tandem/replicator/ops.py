"""Journal operations: what an application did to its protected files, in order.

Every path is relative to the protected root, in normalised POSIX form ("db/data.mdf").
``safe_path`` refuses absolute paths, ``..`` components, NUL bytes and empty names; it runs
when an operation is captured and again, on the target, before it is applied.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from enum import IntEnum


class PathRefusedError(ValueError):
    """A path that would leave the protected root (or is not a valid relative path)."""


class OpKind(IntEnum):
    WRITE = 1
    TRUNCATE = 2
    CREATE = 3
    MKDIR = 4
    UNLINK = 5
    RMDIR = 6
    RENAME = 7
    SYMLINK = 8
    CHMOD = 9
    CHOWN = 10
    SET_TIMES = 11
    FSYNC = 12


@dataclass(frozen=True, slots=True)
class Op:
    """One operation. Fields a kind does not use keep their defaults.

    - WRITE: ``offset``, ``data``          - TRUNCATE: ``size``
    - CREATE / MKDIR / CHMOD: ``mode``     - RENAME: ``target`` (new path)
    - SYMLINK: ``target`` (link content, not checked: it is data, never followed on apply)
    - CHOWN: ``uid`` / ``gid`` (-1 keeps)  - SET_TIMES: ``atime_ns`` / ``mtime_ns``
    - UNLINK / RMDIR / FSYNC: path only
    """

    kind: OpKind
    path: str
    offset: int = 0
    #: bytes, or a read-only view into a received batch (no copy on the target)
    data: bytes | memoryview = b""
    size: int = 0
    mode: int = 0
    target: str = ""
    uid: int = -1
    gid: int = -1
    atime_ns: int = 0
    mtime_ns: int = 0

    @property
    def payload_bytes(self) -> int:
        return len(self.data) + len(self.path) + len(self.target)


def safe_path(path: str) -> str:
    """The normalised relative form of ``path``, or ``PathRefusedError`` with the reason."""
    if not isinstance(path, str) or path == "":
        raise PathRefusedError("empty path")
    if "\x00" in path:
        raise PathRefusedError(f"path {path!r} contains a NUL byte")
    unified = path.replace("\\", "/")
    if unified.startswith("/") or (len(unified) > 1 and unified[1] == ":"):
        raise PathRefusedError(f"path {path!r} is absolute")
    parts = unified.split("/")
    if ".." in parts:
        raise PathRefusedError(f"path {path!r} climbs out with '..'")
    normal = posixpath.normpath(unified)
    if normal in (".", ""):
        raise PathRefusedError(f"path {path!r} names the root itself")
    return normal


def checked(op: Op) -> Op:
    """``op`` with its path (and rename target) normalised; refuse anything unsafe."""
    path = safe_path(op.path)
    target = safe_path(op.target) if op.kind is OpKind.RENAME else op.target
    if op.kind is OpKind.SYMLINK and "\x00" in op.target:
        raise PathRefusedError(f"symlink {op.path!r} content contains a NUL byte")
    if op.offset < 0 or op.size < 0:
        raise PathRefusedError(f"{op.kind.name} on {op.path!r} has a negative offset or size")
    if path == op.path and target == op.target:
        return op
    return Op(
        kind=op.kind, path=path, offset=op.offset, data=op.data, size=op.size, mode=op.mode,
        target=target, uid=op.uid, gid=op.gid, atime_ns=op.atime_ns, mtime_ns=op.mtime_ns,
    )  # fmt: skip
