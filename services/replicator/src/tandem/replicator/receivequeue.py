"""The receive queue on a target: journal batches on local disk, fsynced before they are
acknowledged, read back by the applier in sequence order, removed once applied."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from tandem.replicator.batch import Batch, unpack

#: At most this many decoded batches are kept in memory (a batch is at most ~1 MiB).
MAX_DECODED = 64


class ReceiveQueue:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        directory.mkdir(parents=True, exist_ok=True)
        for leftover in directory.glob("*.tmp"):  # a crash between write and rename
            leftover.unlink()
        # Batches stored by this process, decoded once by the receiver (bounded by what is
        # waiting to be applied; entries leave with ``remove``).
        self._decoded: dict[tuple[int, int], Batch] = {}
        self._lock = threading.Lock()
        # What is stored, kept in memory so that the applier need not list the folder per
        # batch (a long backlog would make that quadratic); read from disk once at start.
        self._sizes: dict[tuple[int, int], int] = {}
        for p in directory.glob("*.batch"):
            epoch, _, seq = p.stem.partition("-")
            self._sizes[(int(epoch), int(seq))] = p.stat().st_size

    def _path(self, epoch: int, seq: int) -> Path:
        return self.dir / f"{epoch:020d}-{seq:020d}.batch"

    def put(
        self,
        epoch: int,
        seq: int,
        data: bytes,
        headers: dict[str, str],
        decoded: Batch | None = None,
    ) -> None:
        """Store durably: write, fsync, rename, fsync the directory. Then it may be acked.
        ``decoded`` (the batch already checked by the receiver) is kept in memory so that the
        applier does not decode it a second time; after a restart it is read from disk."""
        path = self._path(epoch, seq)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps(headers).encode() + b"\n" + data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dfd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
        with self._lock:
            self._sizes[(epoch, seq)] = len(data)
            if (
                decoded is not None and len(self._decoded) < MAX_DECODED
            ):  # a long backlog is read back from disk
                self._decoded[(epoch, seq)] = decoded

    def get(self, epoch: int, seq: int) -> Batch | None:
        with self._lock:
            cached = self._decoded.get((epoch, seq))
        if cached is not None:
            return cached
        try:
            raw = self._path(epoch, seq).read_bytes()
        except FileNotFoundError:
            return None
        head, _, data = raw.partition(b"\n")
        return unpack(data, json.loads(head))

    def remove(self, epoch: int, seq: int) -> None:
        with self._lock:
            self._decoded.pop((epoch, seq), None)
            self._sizes.pop((epoch, seq), None)
        self._path(epoch, seq).unlink(missing_ok=True)

    def pending(self) -> list[tuple[int, int]]:
        """(epoch, seq) of every stored batch, in order."""
        with self._lock:
            return sorted(self._sizes)

    def count(self) -> int:
        with self._lock:
            return len(self._sizes)

    def depth(self) -> tuple[int, int]:
        """(batches, bytes) waiting to be applied."""
        with self._lock:
            return len(self._sizes), sum(self._sizes.values())
