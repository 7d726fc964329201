"""The receive queue on a target: journal batches appended to segment log files and fsynced
before they are acknowledged, read back by the applier in sequence order, dropped once applied.

A fetched group of batches costs one append and one fsync (group commit), not a file, an
fsync, a rename and a folder fsync per batch. Segment files are named after their first
record (``<epoch>-<seq>.seg``) and hold records

    magic "TRQ1" | epoch u64 | seq u64 | head_len u32 | data_len u32 | check u64 | head | data

(little-endian; ``head`` is the message's headers as JSON, ``data`` the batch as received,
whose own checksum header guards its bytes; ``check`` is an xxh64 of the fields before it and
the head). A new segment is started when the current one passes ``segment_bytes``; a segment
is deleted once none of its batches waits any more. At start the segments are read back; a
record cut short by a crash (never acknowledged: the fsync comes first) ends its segment, which
is truncated there, and the stream delivers the batch again.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import xxhash

from tandem.replicator.batch import Batch, captured_at, unpack

log = logging.getLogger(__name__)

#: At most this many decoded batches are kept in memory (a batch is at most ~1 MiB).
MAX_DECODED = 64
SEGMENT_BYTES = 64 << 20
_MAGIC = b"TRQ1"
_RECORD = struct.Struct("<4sQQII")
_CHECK = struct.Struct("<Q")
_HEADER_SIZE = _RECORD.size + _CHECK.size


@dataclass(frozen=True)
class Incoming:
    """One batch to store: as received, plus the batch decoded (kept in memory) if known."""

    epoch: int
    seq: int
    data: bytes
    headers: dict[str, str]
    decoded: Batch | None = None


@dataclass(frozen=True)
class _Where:
    segment: str
    offset: int  # of the data
    size: int  # of the data
    headers: dict[str, str]
    #: When the batch's first op was captured on the source (wall time; None: its headers do
    #: not say, a batch of an earlier version). Read once here, not at each status look.
    captured_at: float | None = None

    @classmethod
    def of(cls, segment: str, offset: int, size: int, headers: dict[str, str]) -> _Where:
        return cls(segment, offset, size, headers, captured_at(headers))


def _record(item: Incoming) -> tuple[bytes, bytes]:
    head = json.dumps(item.headers).encode()
    fields = _RECORD.pack(_MAGIC, item.epoch, item.seq, len(head), len(item.data))
    check = _CHECK.pack(xxhash.xxh64_intdigest(fields + head))
    return fields + check + head, item.data


class ReceiveQueue:
    def __init__(self, directory: Path, *, segment_bytes: int = SEGMENT_BYTES) -> None:
        self.dir = directory
        self.segment_bytes = segment_bytes
        directory.mkdir(parents=True, exist_ok=True)
        for leftover in directory.glob("*.batch"):  # the one-file-per-batch layout of 0.x
            self._adopt_old(leftover)
        self._lock = threading.Lock()
        self._where: dict[tuple[int, int], _Where] = {}
        self._live: dict[str, int] = {}  # segment -> batches in it still waiting
        # Batches stored by this process, decoded once by the receiver (bounded by what is
        # waiting to be applied; entries leave with ``remove``).
        self._decoded: dict[tuple[int, int], Batch] = {}
        self._bytes = 0
        self._current: str | None = None  # the segment appended to
        self._fd: int | None = None
        self._size = 0
        for path in sorted(directory.glob("*.seg")):
            self._load(path)

    # -- storing ------------------------------------------------------------------------------

    def put(
        self,
        epoch: int,
        seq: int,
        data: bytes,
        headers: dict[str, str],
        decoded: Batch | None = None,
    ) -> None:
        """Store one batch durably; see ``put_many``."""
        self.put_many([Incoming(epoch, seq, data, headers, decoded)])

    def put_many(self, items: list[Incoming]) -> None:
        """Append ``items`` and fsync once: on return they are on disk and may be acked.
        A decoded batch is kept in memory so that the applier does not decode it again."""
        if not items:
            return
        new_segment = self._fd is None or self._size >= self.segment_bytes
        if new_segment:
            self._roll(items[0])
        assert self._fd is not None and self._current is not None
        placed: list[tuple[Incoming, _Where]] = []
        parts: list[bytes] = []
        offset = self._size
        for item in items:
            head, data = _record(item)
            parts += (head, data)
            offset += len(head)
            placed.append((item, _Where.of(self._current, offset, len(data), item.headers)))
            offset += len(data)
        _writev_all(self._fd, parts)
        os.fsync(self._fd)
        if new_segment:
            _fsync_dir(self.dir)  # the new file's name is durable too
        self._size = offset
        with self._lock:
            for item, where in placed:
                self._index((item.epoch, item.seq), where)
                if item.decoded is not None and len(self._decoded) < MAX_DECODED:
                    self._decoded[(item.epoch, item.seq)] = item.decoded

    def _roll(self, first: Incoming) -> None:
        if self._fd is not None:
            os.close(self._fd)
        name = f"{first.epoch:020d}-{first.seq:020d}.seg"
        path = self.dir / name
        if path.exists():  # the same first batch again (stored, then delivered again)
            n = 1
            while (self.dir / f"{path.stem}.{n}.seg").exists():
                n += 1
            name = f"{path.stem}.{n}.seg"
        self._fd = os.open(self.dir / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with self._lock:
            previous, self._current = self._current, name
            self._live.setdefault(name, 0)
            if previous is not None and self._live.get(previous) == 0:
                self._drop_segment(previous)
        self._size = 0

    def _index(self, key: tuple[int, int], where: _Where) -> None:
        """Record ``key`` at ``where`` (the lock is held); a later copy replaces an earlier."""
        old = self._where.get(key)
        if old is not None:
            self._bytes -= old.size
            self._release(old.segment)
        self._where[key] = where
        self._live[where.segment] = self._live.get(where.segment, 0) + 1
        self._bytes += where.size

    # -- reading and removing ---------------------------------------------------------------

    def get(self, epoch: int, seq: int) -> Batch | None:
        with self._lock:
            cached = self._decoded.get((epoch, seq))
            where = self._where.get((epoch, seq))
        if cached is not None:
            return cached
        if where is None:
            return None
        fd = os.open(self.dir / where.segment, os.O_RDONLY)
        try:
            data = os.pread(fd, where.size, where.offset)
        finally:
            os.close(fd)
        return unpack(data, where.headers)

    def remove(self, epoch: int, seq: int) -> None:
        with self._lock:
            self._decoded.pop((epoch, seq), None)
            where = self._where.pop((epoch, seq), None)
            if where is not None:
                self._bytes -= where.size
                self._release(where.segment)

    def _release(self, segment: str) -> None:
        """One batch of ``segment`` no longer waits; drop the file if it was the last one
        (the lock is held). The segment being appended to stays until the next one starts."""
        left = self._live[segment] - 1
        self._live[segment] = left
        if left == 0 and segment != self._current:
            self._drop_segment(segment)

    def _drop_segment(self, segment: str) -> None:
        del self._live[segment]
        (self.dir / segment).unlink(missing_ok=True)

    def drop_upto(self, epoch: int, seq: int) -> int:
        """Remove every batch up to (epoch, seq), applied already; return how many.

        ``remove`` is not recorded on disk: a segment still holding a waiting batch brings
        its applied ones back at the next start. Nothing would remove them again (the applier
        goes on from its position), and they would count as lag forever."""
        done = [key for key in self.pending() if key <= (epoch, seq)]
        for key in done:
            self.remove(*key)
        return len(done)

    def has(self, epoch: int, seq: int) -> bool:
        with self._lock:
            return (epoch, seq) in self._where

    def pending(self) -> list[tuple[int, int]]:
        """(epoch, seq) of every stored batch, in order."""
        with self._lock:
            return sorted(self._where)

    def count(self) -> int:
        with self._lock:
            return len(self._where)

    def depth(self) -> tuple[int, int]:
        """(batches, bytes) waiting to be applied."""
        with self._lock:
            return len(self._where), self._bytes

    def oldest_captured_at(self) -> float | None:
        """Capture wall time of the oldest change still waiting to be applied; None when
        nothing waits or no waiting batch says (a linear look: called for status only)."""
        with self._lock:
            times = [w.captured_at for w in self._where.values() if w.captured_at is not None]
        return min(times, default=None)

    def oldest_age_s(self, now: float | None = None) -> float:
        """Seconds since the oldest change waiting here was captured on the source (``now``:
        a ``time.time()`` reading); 0.0 when nothing waits (or no waiting batch says when)."""
        captured = self.oldest_captured_at()
        if captured is None:
            return 0.0
        # Captured by the source's clock, read by this node's: the two may differ a little,
        # so a change may look captured in the future; it is then 0 s old, not negative.
        return max((time.time() if now is None else now) - captured, 0.0)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # -- start ----------------------------------------------------------------------------------

    def _load(self, path: Path) -> None:
        """Index the records of one segment; truncate it at a record cut short."""
        name, size, offset = path.name, path.stat().st_size, 0
        self._live.setdefault(name, 0)
        with path.open("rb") as f:
            while offset < size:
                f.seek(offset)
                header = f.read(_HEADER_SIZE)
                problem = _check_header(header, f, size - offset)
                if isinstance(problem, str):
                    log.warning(
                        "receive queue: %s ends at byte %d (%s): truncated; the stream "
                        "delivers what followed again",
                        name, offset, problem,
                    )  # fmt: skip
                    os.truncate(path, offset)
                    break
                epoch, seq, head_len, data_len, headers = problem
                data_at = offset + _HEADER_SIZE + head_len
                self._index((epoch, seq), _Where.of(name, data_at, data_len, headers))
                offset = data_at + data_len
        if self._live[name] == 0:
            self._drop_segment(name)

    def _adopt_old(self, path: Path) -> None:
        """A batch file of the former layout ("<header json>\\n<data>"): re-stored as a
        segment record, then the file is removed (an upgrade keeps what was acked)."""
        epoch, _, seq = path.stem.partition("-")
        head, _, data = path.read_bytes().partition(b"\n")
        item = Incoming(int(epoch), int(seq), data, json.loads(head))
        target = self.dir / f"{item.epoch:020d}-{item.seq:020d}.seg"
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            _writev_all(fd, list(_record(item)))
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(self.dir)
        path.unlink()


def _check_header(
    header: bytes, f: object, room: int
) -> str | tuple[int, int, int, int, dict[str, str]]:
    """The record's fields, or what is wrong with it."""
    if len(header) < _HEADER_SIZE:
        return "a record header cut short"
    magic, epoch, seq, head_len, data_len = _RECORD.unpack_from(header)
    if magic != _MAGIC:
        return "not a record (bad magic)"
    if _HEADER_SIZE + head_len + data_len > room:
        return "a record cut short"
    head = f.read(head_len)  # type: ignore[attr-defined]
    (check,) = _CHECK.unpack_from(header, _RECORD.size)
    if xxhash.xxh64_intdigest(header[: _RECORD.size] + head) != check:
        return "a record header with a bad checksum"
    try:
        headers = json.loads(head)
    except ValueError:
        return "a record with unreadable headers"
    return epoch, seq, head_len, data_len, headers


def _writev_all(fd: int, parts: list[bytes]) -> None:
    """Append every byte of ``parts``: a short write (a filling disk) is not success."""
    views = [memoryview(p) for p in parts if p]
    limit = os.sysconf("SC_IOV_MAX") if hasattr(os, "sysconf") else 1024
    while views:
        n = os.writev(fd, views[:limit])
        while n and views:
            if n >= len(views[0]):
                n -= len(views[0])
                views.pop(0)
            else:
                views[0] = views[0][n:]
                n = 0


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
