"""The send queue on the Active: numbers operations into batches and keeps them until the
bus has stored them.

- ``submit`` (any thread, in capture order) adds an op to the open batch; the batch is sealed
  when it reaches ``batch_bytes`` or, via ``seal_if_older``, ``batch_age_s``.
- Sealed batches wait in memory (not yet encoded: ``take`` encodes, outside the lock) up to
  ``memory_bytes``; beyond that they are spilled to files
  in ``spill_dir`` (the bus is slow or away). Past ``spill_quota_bytes`` an alert is raised
  and ``submit`` blocks the writer until the bus catches up: nothing is ever dropped.
- ``acked(seq)`` releases a batch once JetStream acknowledged it.
- Each batch remembers when its first op was captured, until it is acked: ``oldest_age_s``
  (status: how old the oldest change the bus does not have yet is) and, in the batch's
  headers, the wall time of that capture (a target's own age of what it has not applied).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tandem.replicator.batch import Batch, body_op_count, encode_body, pack_body
from tandem.replicator.codec import Codec
from tandem.replicator.ops import Op, OpKind

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SendQueueLimits:
    #: A batch is sealed at this size; it also stays under it, so that a batch always fits
    #: in one bus message (NATS' default max_payload is 1 MiB).
    batch_bytes: int = 768 << 10
    #: Larger writes are journaled as consecutive writes of at most this size.
    max_write_bytes: int = 256 << 10
    batch_age_s: float = 0.05
    memory_bytes: int = 64 << 20
    spill_quota_bytes: int = 1 << 30


@dataclass(frozen=True)
class Sealed:
    epoch: int
    seq: int
    ops: int
    data: bytes
    headers: dict[str, str]


class SendQueue:
    def __init__(
        self,
        *,
        epoch: int,
        codec: Codec,
        spill_dir: Path,
        limits: SendQueueLimits | None = None,
        first_seq: int = 1,
        on_alert: Callable[[str], None] = lambda reason: None,
        on_clear: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self.epoch = epoch
        self.codec = codec
        self.limits = limits or SendQueueLimits()
        self.spill_dir = spill_dir
        spill_dir.mkdir(parents=True, exist_ok=True)
        self.on_alert = on_alert
        #: Called (under the lock) once the spill is back under its quota: the alert ends.
        self.on_clear = on_clear
        self._cond = threading.Condition()
        self._open: list[Op] = []
        self._open_bytes = 0
        self._open_since = 0.0  # time.monotonic() of the open batch's first op
        self._open_wall = 0.0  # and its time.time()
        self._next_seq = first_seq
        self._next_op = 0
        #: seq -> (batch, bytes it counts): sealed, not yet encoded or stored by the bus.
        self._memory: OrderedDict[int, tuple[Batch, int]] = OrderedDict()
        self._memory_bytes = 0
        self._spilled: dict[int, int] = {}  # seq -> bytes on disk
        self._spilled_bytes = 0
        #: seq -> (monotonic, wall) capture time of its first op, for every sealed batch not
        #: yet acked (memory or spilled), in seq order: the first one is the oldest.
        self._captured: dict[int, tuple[float, float]] = {}
        self._sent_upto = first_seq - 1  # highest seq handed to the publisher
        self._over_quota = False
        #: Called (under the queue's lock, from the sealing thread) after each seal: must be
        #: quick and thread-safe (the publisher wakes its event loop with it).
        self.on_sealed: Callable[[], None] | None = None

    # -- producer side (capture threads) -------------------------------------------------

    def submit(self, op: Op) -> None:
        step = self.limits.max_write_bytes
        if op.kind is OpKind.WRITE and len(op.data) > step:
            data = memoryview(op.data)  # parts are views: the data is copied once, at encode
            for start in range(0, len(data), step):
                part = data[start : start + step]
                self._submit_one(Op(OpKind.WRITE, op.path, offset=op.offset + start, data=part))
        else:
            self._submit_one(op)

    def _submit_one(self, op: Op) -> None:
        cost = op.payload_bytes + 16
        with self._cond:
            while self._full():
                if not self._over_quota:
                    self._over_quota = True
                    reason = (
                        f"send queue spill is over its quota ({self._spilled_bytes} bytes of "
                        f"{self.limits.spill_quota_bytes}): writers wait for the bus"
                    )
                    log.error(reason)
                    self.on_alert(reason)
                self._cond.wait(timeout=1.0)
            if self._open and self._open_bytes + cost > self.limits.batch_bytes:
                self._seal()
            if not self._open:
                self._open_since = time.monotonic()
                self._open_wall = time.time()
            self._open.append(op)
            self._open_bytes += cost
            if self._open_bytes >= self.limits.batch_bytes:
                self._seal()

    def seal_if_older(self, now: float | None = None) -> bool:
        """Seal the open batch if it is older than ``batch_age_s``; True if one was sealed."""
        with self._cond:
            age = (now or time.monotonic()) - self._open_since
            if self._open and age >= self.limits.batch_age_s:
                self._seal()
                return True
            return False

    def seal_now(self) -> None:
        """Seal whatever is open (drain before a switchover)."""
        with self._cond:
            if self._open:
                self._seal()

    def _full(self) -> bool:
        return self._spilled_bytes >= self.limits.spill_quota_bytes

    def _seal(self) -> None:
        # Numbered here, in capture order; encoded (codec, checksum) by ``take``, outside the
        # lock, so that writers do not wait for compression.
        batch = Batch(self.epoch, self._next_seq, self._next_op, tuple(self._open))
        size = self._open_bytes
        self._captured[batch.seq] = (self._open_since, self._open_wall)
        self._next_seq += 1
        self._next_op += len(batch.ops)
        self._open, self._open_bytes = [], 0
        if self._memory_bytes + size > self.limits.memory_bytes:
            # Spilled as the plain body: the codec runs later, in ``take``, not in the writer's
            # path (the writer holds the capture's lock while it seals).
            self._spill(batch.seq, encode_body(batch))
        else:
            self._memory[batch.seq] = (batch, size)
            self._memory_bytes += size
        self._cond.notify_all()
        if self.on_sealed is not None:
            self.on_sealed()

    def _spill(self, seq: int, body: bytes) -> None:
        path = self._spill_path(seq)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(body)
        os.replace(tmp, path)
        self._spilled[seq] = len(body)
        self._spilled_bytes += len(body)

    def _spill_path(self, seq: int) -> Path:
        return self.spill_dir / f"{self.epoch:020d}-{seq:020d}"

    # -- consumer side (the publisher) ----------------------------------------------------

    def take(self, timeout: float) -> Sealed | None:
        """The next sealed batch not yet handed out, in sequence order, or None on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                seq = self._sent_upto + 1
                found = self._get(seq)
                if found is not None:
                    self._sent_upto = seq
                    captured = self._captured.get(seq)
                    wall = captured[1] if captured is not None else None
                    break
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self._cond.wait(timeout=remaining)
        body = encode_body(found) if isinstance(found, Batch) else found  # or spilled
        data, headers = pack_body(self.epoch, seq, body, self.codec, captured_at=wall)
        return Sealed(self.epoch, seq, body_op_count(body), data, headers)

    def ready(self) -> int:
        """Bytes of the sealed batches waiting to be taken (0: none); a spilled one counts
        as ``batch_bytes``."""
        with self._cond:
            if self._sent_upto >= self._next_seq - 1:
                return 0
            total = 0
            for seq in range(self._sent_upto + 1, self._next_seq):
                kept = self._memory.get(seq)
                total += kept[1] if kept is not None else self.limits.batch_bytes
                if total >= self.limits.batch_bytes:
                    break  # enough to know it is not small
            return max(total, 1)

    def acked(self, seq: int) -> None:
        with self._cond:
            kept = self._memory.pop(seq, None)
            if kept is not None:
                self._memory_bytes -= kept[1]
            self._captured.pop(seq, None)
            size = self._spilled.pop(seq, None)
            if size is not None:
                self._spilled_bytes -= size
                self._spill_path(seq).unlink(missing_ok=True)
            if self._over_quota and not self._full():
                self._over_quota = False
                log.info("send queue spill back under its quota")
                self.on_clear(
                    f"send queue spill back under its quota ({self._spilled_bytes} bytes of "
                    f"{self.limits.spill_quota_bytes}): writers go on"
                )
            self._cond.notify_all()

    def _get(self, seq: int) -> Batch | bytes | None:
        """The batch, or the encoded body of a spilled one."""
        if seq in self._memory:
            return self._memory[seq][0]
        if seq in self._spilled:
            return self._spill_path(seq).read_bytes()
        return None

    # -- status ---------------------------------------------------------------------------

    def depth(self) -> tuple[int, int]:
        """(batches, bytes) waiting for the bus, open batch included."""
        with self._cond:
            batches = len(self._memory) + len(self._spilled) + (1 if self._open else 0)
            return batches, self._memory_bytes + self._spilled_bytes + self._open_bytes

    def oldest_age_s(self, now: float | None = None) -> float:
        """Seconds since the oldest op the bus has not stored yet was captured (``now``:
        a ``time.monotonic()`` reading); 0.0 when nothing waits."""
        with self._cond:
            if self._captured:
                since = next(iter(self._captured.values()))[0]
            elif self._open:
                since = self._open_since
            else:
                return 0.0
        return max((time.monotonic() if now is None else now) - since, 0.0)

    @property
    def spilled_bytes(self) -> int:
        return self._spilled_bytes

    @property
    def last_sealed_seq(self) -> int:
        return self._next_seq - 1
