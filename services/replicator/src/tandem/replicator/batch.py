"""The journal batch format, version 1.

A batch is the unit published to ``TANDEM_JOURNAL`` and applied on a target. Its body is

    header  := magic "TJB" | format u8 (=1) | epoch u64 | seq u64 | first_op u64 | count u32
    record  := kind u8 | path_len u16 | path utf-8 | fields of the kind
      WRITE      offset u64 | len u32 | data
      TRUNCATE   size u64
      CREATE / MKDIR / CHMOD    mode u32
      RENAME / SYMLINK          target_len u16 | target utf-8
      CHOWN      uid i32 | gid i32          (-1: unchanged)
      SET_TIMES  atime_ns i64 | mtime_ns i64
      UNLINK / RMDIR / FSYNC    nothing

all little-endian. The body then goes through a codec (``none`` or ``zstd``) and is sent with
headers naming the codec, the format, the epoch, the sequence and an xxh64 checksum of the
encoded bytes, so a corrupt batch is detected before it is decoded.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import xxhash

from tandem.replicator.codec import Codec, codec_named
from tandem.replicator.ops import Op, OpKind, PathRefusedError, checked

FORMAT = 1
MAGIC = b"TJB"
_HEADER = struct.Struct("<3sBQQQI")
_REC = struct.Struct("<BH")
_U64 = struct.Struct("<Q")
_WRITE = struct.Struct("<QI")
_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")
_IDS = struct.Struct("<ii")
_TIMES = struct.Struct("<qq")

H_EPOCH = "Tandem-Epoch"
H_SEQ = "Tandem-Seq"
H_FORMAT = "Tandem-Batch-Format"
H_CODEC = "Tandem-Codec"
H_CHECKSUM = "Tandem-Checksum"
#: Wall time (``time.time()``, seconds as a decimal string) at which the batch's first op was
#: captured on the source: a target tells from it how old its oldest unapplied change is.
#: Optional: batches of earlier versions do not carry it.
H_CAPTURED_AT = "Tandem-Captured-At"


class BatchError(ValueError):
    """A batch that cannot be used: corrupt, unknown format or codec, or an unsafe path."""


@dataclass(frozen=True, slots=True)
class Batch:
    epoch: int
    seq: int
    #: Number of the batch's first operation in the capture order (per epoch).
    first_op: int
    ops: tuple[Op, ...]


def encode_body(batch: Batch) -> bytes:
    # Pieces joined once: write data (most of the bytes) is copied a single time.
    parts: list[bytes | memoryview] = [
        _HEADER.pack(MAGIC, FORMAT, batch.epoch, batch.seq, batch.first_op, len(batch.ops))
    ]
    add = parts.append
    for op in batch.ops:
        path = op.path.encode()
        kind = op.kind
        add(_REC.pack(kind, len(path)))
        add(path)
        if kind is OpKind.WRITE:
            add(_WRITE.pack(op.offset, len(op.data)))
            add(op.data)
        elif kind is OpKind.TRUNCATE:
            add(_U64.pack(op.size))
        elif kind in (OpKind.CREATE, OpKind.MKDIR, OpKind.CHMOD):
            add(_U32.pack(op.mode))
        elif kind in (OpKind.RENAME, OpKind.SYMLINK):
            target = op.target.encode()
            add(_U16.pack(len(target)))
            add(target)
        elif kind is OpKind.CHOWN:
            add(_IDS.pack(op.uid, op.gid))
        elif kind is OpKind.SET_TIMES:
            add(_TIMES.pack(op.atime_ns, op.mtime_ns))
    return b"".join(parts)


def body_op_count(body: bytes) -> int:
    """The number of operations an encoded body says it holds."""
    return int(_HEADER.unpack_from(body, 0)[-1])


def decode_body(body: bytes) -> Batch:
    """Parse a body and check every path; raise ``BatchError`` with the reason."""
    try:
        magic, fmt, epoch, seq, first_op, count = _HEADER.unpack_from(body, 0)
    except struct.error:
        raise BatchError("batch is shorter than its header") from None
    if magic != MAGIC:
        raise BatchError("not a journal batch (bad magic)")
    if fmt != FORMAT:
        raise BatchError(f"batch format {fmt} is not supported (this build reads {FORMAT})")
    pos = _HEADER.size
    view = memoryview(body)
    ops = []
    try:
        for _ in range(count):
            kind_raw, plen = _REC.unpack_from(body, pos)
            pos += _REC.size
            path = body[pos : pos + plen].decode()
            pos += plen
            kind = OpKind(kind_raw)
            op, pos = _fields(kind, path, body, view, pos)
            ops.append(checked(op))
    except PathRefusedError as exc:
        raise BatchError(f"refused: {exc}") from None
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise BatchError(f"corrupt batch at byte {pos}: {exc}") from None
    if pos != len(body):
        raise BatchError(f"corrupt batch: {len(body) - pos} bytes after the last record")
    return Batch(epoch=epoch, seq=seq, first_op=first_op, ops=tuple(ops))


def _fields(kind: OpKind, path: str, body: bytes, view: memoryview, pos: int) -> tuple[Op, int]:
    if kind is OpKind.WRITE:
        offset, n = _WRITE.unpack_from(body, pos)
        start = pos + 12
        if start + n > len(body):
            raise ValueError("write data is cut short")
        # A view, not a copy: the body stays alive as long as its ops do.
        return Op(kind, path, offset=offset, data=view[start : start + n]), start + n
    if kind is OpKind.TRUNCATE:
        return Op(kind, path, size=_U64.unpack_from(body, pos)[0]), pos + 8
    if kind in (OpKind.CREATE, OpKind.MKDIR, OpKind.CHMOD):
        return Op(kind, path, mode=_U32.unpack_from(body, pos)[0]), pos + 4
    if kind in (OpKind.RENAME, OpKind.SYMLINK):
        (n,) = _U16.unpack_from(body, pos)
        return Op(kind, path, target=body[pos + 2 : pos + 2 + n].decode()), pos + 2 + n
    if kind is OpKind.CHOWN:
        uid, gid = _IDS.unpack_from(body, pos)
        return Op(kind, path, uid=uid, gid=gid), pos + 8
    if kind is OpKind.SET_TIMES:
        atime, mtime = _TIMES.unpack_from(body, pos)
        return Op(kind, path, atime_ns=atime, mtime_ns=mtime), pos + 16
    return Op(kind, path), pos


def pack(batch: Batch, codec: Codec) -> tuple[bytes, dict[str, str]]:
    """Wire bytes and headers of ``batch``."""
    return pack_body(batch.epoch, batch.seq, encode_body(batch), codec)


def pack_body(
    epoch: int, seq: int, body: bytes, codec: Codec, captured_at: float | None = None
) -> tuple[bytes, dict[str, str]]:
    """Wire bytes and headers of a batch already encoded by ``encode_body``; ``captured_at``:
    the wall time of its first op (no header when None)."""
    data = codec.encode(body)
    headers = {
        H_EPOCH: str(epoch),
        H_SEQ: str(seq),
        H_FORMAT: str(FORMAT),
        H_CODEC: codec.name,
        H_CHECKSUM: xxhash.xxh64_hexdigest(data),
    }
    if captured_at is not None:
        headers[H_CAPTURED_AT] = f"{captured_at:.6f}"
    return data, headers


def captured_at(headers: dict[str, str] | None) -> float | None:
    """The capture wall time a batch's headers carry; None when absent (a batch of an earlier
    version) or unreadable: the age is a status figure, never a reason to refuse a batch."""
    raw = (headers or {}).get(H_CAPTURED_AT)
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def unpack(data: bytes, headers: dict[str, str] | None) -> Batch:
    """Check the checksum, decode with the named codec, parse; ``BatchError`` on any fault."""
    h = headers or {}
    if xxhash.xxh64_hexdigest(data) != h.get(H_CHECKSUM):
        raise BatchError("checksum mismatch: the batch was corrupted on the way")
    try:
        codec = codec_named(h.get(H_CODEC, ""))
    except KeyError as exc:
        raise BatchError(str(exc)) from None
    batch = decode_body(codec.decode(data))
    if str(batch.epoch) != h.get(H_EPOCH) or str(batch.seq) != h.get(H_SEQ):
        raise BatchError("headers and body disagree on epoch or sequence")
    return batch
