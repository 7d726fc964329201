"""The outbox's file: events queued for the bus survive the process that queued them.

Two files in one folder. ``events.jsonl`` is append-only, one event (its JSON) per line;
``position`` holds the byte offset of the first event not yet stored by the bus. An append
is a single ``write`` (a process killed right after it loses nothing: the kernel has it);
``sync`` makes the appends durable against a machine crash. When everything is published
the log is cut back to nothing, so the file stays as small as what is waiting.

A line torn by a crash in mid-write, or one that no longer decodes, is set aside in
``rejected.jsonl`` with a warning and skipped.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from tandem.events.envelope import Event
from tandem.events.errors import DecodeError
from tandem.events.registry import decode_event

log = logging.getLogger(__name__)

_POSITION_WIDTH = 20


@dataclass(frozen=True)
class Stored:
    """An event in the log and the offset just past its line (where the position moves)."""

    event: Event
    end: int


class OutboxFile:
    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.log_path = folder / "events.jsonl"
        self.position_path = folder / "position"
        self._log = os.open(self.log_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        self._pos = os.open(self.position_path, os.O_RDWR | os.O_CREAT, 0o600)
        self._size = os.fstat(self._log).st_size
        self._dirty = False
        if self._stored_position() > self._size:
            # The log was cut back and the process died before the position followed: nothing
            # waits. Said now, before new appends make the stale position look valid.
            self._write_position(0)

    def close(self) -> None:
        for fd in (self._log, self._pos):
            try:
                os.close(fd)
            except OSError:
                pass

    # -- reading back after a restart ------------------------------------------------------

    def _stored_position(self) -> int:
        raw = os.pread(self._pos, _POSITION_WIDTH + 1, 0).strip()
        try:
            return int(raw) if raw else 0
        except ValueError:
            log.warning("outbox position %r unreadable: sending the whole log again", raw)
            return 0

    def _write_position(self, end: int) -> None:
        os.pwrite(self._pos, str(end).rjust(_POSITION_WIDTH).encode() + b"\n", 0)

    def position(self) -> int:
        return min(max(self._stored_position(), 0), self._size)

    def pending(self) -> list[Stored]:
        """Every event after the position, in order."""
        start = self.position()
        with open(self.log_path, "rb") as f:
            f.seek(start)
            data = f.read()
        found: list[Stored] = []
        offset = start
        for line in data.splitlines(keepends=True):
            offset += len(line)
            if not line.endswith(b"\n"):
                self._set_aside(line, "torn line (the process died while writing it)")
                continue
            try:
                found.append(Stored(decode_event(line), offset))
            except DecodeError as exc:
                self._set_aside(line, exc.reason)
        return found

    def _set_aside(self, line: bytes, reason: str) -> None:
        log.warning("outbox %s: a queued event cannot be read back (%s)", self.folder, reason)
        with open(self.folder / "rejected.jsonl", "ab") as f:
            f.write(line.rstrip(b"\n") + b"\n")

    # -- writing ------------------------------------------------------------------------

    def append(self, event: Event) -> int:
        """Write ``event``; returns the offset just past it."""
        line = event.to_json() + b"\n"
        written = os.write(self._log, line)
        if written != len(line):  # a short write to a regular file: the disk is full
            raise OSError(f"outbox {self.log_path}: wrote {written} of {len(line)} bytes")
        self._size += written
        self._dirty = True
        return self._size

    def sync(self) -> None:
        """Make the appends so far durable (call from a thread: it waits for the disk)."""
        if self._dirty:
            self._dirty = False
            os.fsync(self._log)

    def advance(self, end: int) -> None:
        """Everything before ``end`` is stored by the bus; cut the log when nothing waits."""
        if end >= self._size:
            os.ftruncate(self._log, 0)
            self._size = 0
            end = 0
        self._write_position(end)
