"""Manifests of a protected tree (type, mode, size and block hashes of every entry) and the
operations that turn a replica into a copy of the source: verify & synchronize.

Only differing blocks are sent; missing entries are created, extra ones deleted, in an order
the applier can follow: removals deepest first, then directories shallowest first, then
files and links.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import xxhash
import zstandard

from tandem.replicator.ops import Op, OpKind

BLOCK = 64 * 1024
#: Adjacent differing blocks are sent as one WRITE of at most this many bytes.
MAX_WRITE = 4 * 1024 * 1024


@dataclass
class Entry:
    kind: str  # "file", "dir" or "link"
    mode: int = 0
    size: int = 0
    blocks: list[str] = field(default_factory=list)
    target: str = ""
    #: The owner (-1: not known, e.g. a manifest from a node of an older version). An
    #: application running as its own user (postgres) refuses files owned by another.
    uid: int = -1
    gid: int = -1

    def owner_differs(self, other: Entry | None) -> bool:
        """Whether ``other`` (the replica's) needs a CHOWN to match this (the source's):
        an unknown owner on either side is left alone; a new entry (None) is created by the
        target's own user, so only an owner other than root needs saying."""
        if self.uid < 0 or self.gid < 0:
            return False
        if other is None or other.kind != self.kind:
            return (self.uid, self.gid) != (0, 0)
        if other.uid < 0 or other.gid < 0:
            return False
        return (self.uid, self.gid) != (other.uid, other.gid)


def block_hashes(path: Path, block_size: int = BLOCK) -> list[str]:
    out = []
    with path.open("rb") as f:
        while chunk := f.read(block_size):
            out.append(xxhash.xxh3_64_hexdigest(chunk))
    return out


def entry_of(path: Path, block_size: int = BLOCK) -> Entry | None:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    uid, gid = st.st_uid, st.st_gid
    if stat.S_ISLNK(st.st_mode):
        return Entry("link", target=os.readlink(path), uid=uid, gid=gid)
    if stat.S_ISDIR(st.st_mode):
        return Entry("dir", mode=stat.S_IMODE(st.st_mode), uid=uid, gid=gid)
    if stat.S_ISREG(st.st_mode):
        try:
            blocks = block_hashes(path, block_size)
        except FileNotFoundError:
            return None
        return Entry(
            "file",
            mode=stat.S_IMODE(st.st_mode),
            size=st.st_size,
            blocks=blocks,
            uid=uid,
            gid=gid,
        )
    return None  # sockets, fifos, devices: not replicated


def scan(root: Path, block_size: int = BLOCK) -> dict[str, Entry]:
    """Every entry under ``root`` by relative path (symlinks are not followed)."""
    out: dict[str, Entry] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            e = entry_of(p, block_size)
            if e is not None:
                out[p.relative_to(root).as_posix()] = e
    return out


def encode(entries: dict[str, Entry]) -> bytes:
    lines = (json.dumps({"path": p, **asdict(e)}) for p, e in sorted(entries.items()))
    return zstandard.ZstdCompressor(level=3).compress("\n".join(lines).encode())


def decode(data: bytes) -> dict[str, Entry]:
    out = {}
    text = zstandard.ZstdDecompressor().decompress(data, max_output_size=1 << 31).decode()
    for line in filter(None, text.split("\n")):
        raw = json.loads(line)
        path = raw.pop("path")
        out[path] = Entry(**raw)
    return out


@dataclass
class SyncStats:
    checked: int = 0
    out_of_sync: int = 0
    bytes_sent: int = 0
    #: Of ``out_of_sync``: files the source changed after ``changed_since`` (changes that
    #: may not have reached the replica's manifest yet: in flight, not diverged).
    recent: int = 0


def _depth(path: str) -> int:
    return path.count("/")


def removals(source: dict[str, Entry], replica: dict[str, Entry]) -> Iterator[Op]:
    """Extra entries and entries of another type, deepest first."""
    doomed = [p for p, e in replica.items() if p not in source or source[p].kind != e.kind]
    for path in sorted(doomed, key=lambda p: (-_depth(p), p)):
        yield Op(OpKind.RMDIR if replica[path].kind == "dir" else OpKind.UNLINK, path)


def file_ops(
    root: Path, path: str, have: Entry, replica: Entry | None, block_size: int
) -> Iterator[Op]:
    """Ops that make the replica's ``path`` equal the source file; reads only differing blocks."""
    theirs = replica.blocks if replica is not None and replica.kind == "file" else []
    if replica is None or replica.kind != "file":
        yield Op(OpKind.CREATE, path, mode=have.mode)
    with (root / path).open("rb") as f:
        run_start: int | None = None
        for i, digest in enumerate([*have.blocks, None]):
            differs = digest is not None and (i >= len(theirs) or theirs[i] != digest)
            if differs and run_start is None:
                run_start = i
            if run_start is not None and (not differs or (i - run_start) * block_size >= MAX_WRITE):
                f.seek(run_start * block_size)
                data = f.read((i - run_start) * block_size)
                yield Op(OpKind.WRITE, path, offset=run_start * block_size, data=data)
                run_start = i if differs else None
    if replica is None or replica.kind != "file" or replica.size != have.size:
        yield Op(OpKind.TRUNCATE, path, size=have.size)
    if replica is not None and replica.kind == "file" and replica.mode != have.mode:
        yield Op(OpKind.CHMOD, path, mode=have.mode)


def same(a: Entry, b: Entry | None) -> bool:
    if b is None or a.kind != b.kind or a.owner_differs(b):
        return False
    if a.kind == "link":
        return a.target == b.target
    if a.kind == "dir":
        return True
    return a.size == b.size and a.blocks == b.blocks and a.mode == b.mode
