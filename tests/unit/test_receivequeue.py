"""The receive queue's segment log on a real disk: what was stored survives a restart, a
record cut short by a crash is dropped (it was never acknowledged), emptied segments go, and
batches stored by the former one-file-per-batch layout are kept across an upgrade."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tandem.replicator.batch import Batch, encode_body, pack, pack_body
from tandem.replicator.codec import codec_named
from tandem.replicator.ops import Op, OpKind
from tandem.replicator.receivequeue import Incoming, ReceiveQueue


def incoming(
    seq: int, epoch: int = 2, size: int = 100, captured_at: float | None = None
) -> Incoming:
    batch = Batch(epoch, seq, seq * 10, (Op(OpKind.WRITE, f"f{seq}", data=bytes([seq]) * size),))
    if captured_at is None:
        data, headers = pack(batch, codec_named("zstd"))  # as an earlier version sent it
    else:
        data, headers = pack_body(
            epoch, seq, encode_body(batch), codec_named("zstd"), captured_at=captured_at
        )
    return Incoming(epoch, seq, data, headers, batch)


def segments(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("*.seg"))


def test_stored_batches_are_read_back_after_a_restart(tmp_path: Path) -> None:
    q = ReceiveQueue(tmp_path)
    q.put_many([incoming(1), incoming(2)])
    q.put_many([incoming(3)])
    q.close()

    again = ReceiveQueue(tmp_path)
    assert again.pending() == [(2, 1), (2, 2), (2, 3)]
    batch = again.get(2, 2)  # read from disk, not from memory
    assert batch is not None and batch.ops[0].data == bytes([2]) * 100
    assert again.depth() == (3, sum(len(incoming(s).data) for s in (1, 2, 3)))
    assert again.get(2, 9) is None


def test_a_record_cut_short_by_a_crash_is_dropped(tmp_path: Path) -> None:
    q = ReceiveQueue(tmp_path)
    q.put_many([incoming(1), incoming(2)])
    q.close()
    [segment] = segments(tmp_path)
    whole = (tmp_path / segment).stat().st_size
    os.truncate(tmp_path / segment, whole - 7)  # the last record's tail never reached disk

    again = ReceiveQueue(tmp_path)
    assert again.pending() == [(2, 1)]
    assert (tmp_path / segment).stat().st_size < whole - 7, "truncated after the good record"
    again.put_many([incoming(2)])  # delivered again by the stream: stored anew
    assert again.pending() == [(2, 1), (2, 2)]
    again.close()
    assert ReceiveQueue(tmp_path).pending() == [(2, 1), (2, 2)]


def test_garbage_after_the_last_record_is_cut_off(tmp_path: Path) -> None:
    q = ReceiveQueue(tmp_path)
    q.put_many([incoming(1)])
    q.close()
    [segment] = segments(tmp_path)
    with (tmp_path / segment).open("ab") as f:
        f.write(b"\0" * 100)
    assert ReceiveQueue(tmp_path).pending() == [(2, 1)]


def test_a_segment_is_deleted_once_its_batches_are_applied(tmp_path: Path) -> None:
    q = ReceiveQueue(tmp_path, segment_bytes=1)  # every group starts a new segment
    q.put_many([incoming(1), incoming(2)])
    q.put_many([incoming(3)])
    assert len(segments(tmp_path)) == 2
    q.remove(2, 1)
    assert len(segments(tmp_path)) == 2, "batch 2 still waits in the first segment"
    q.remove(2, 2)
    assert segments(tmp_path) == [f"{2:020d}-{3:020d}.seg"]
    q.remove(2, 3)  # the segment appended to stays until the next one starts
    q.put_many([incoming(4)])
    assert segments(tmp_path) == [f"{2:020d}-{4:020d}.seg"]
    assert q.depth() == (1, len(incoming(4).data))


def test_a_batch_stored_twice_counts_once(tmp_path: Path) -> None:
    q = ReceiveQueue(tmp_path, segment_bytes=1)
    q.put_many([incoming(1)])
    q.put_many([incoming(1)])  # the ack was lost: delivered and stored again
    assert q.depth() == (1, len(incoming(1).data))
    q.close()
    again = ReceiveQueue(tmp_path)
    assert again.pending() == [(2, 1)]
    again.remove(2, 1)
    again.put_many([incoming(2)])
    assert segments(tmp_path) == [f"{2:020d}-{2:020d}.seg"], "both copies' segments went"


def test_batches_of_the_former_layout_are_kept(tmp_path: Path) -> None:
    old = incoming(5)
    path = tmp_path / f"{old.epoch:020d}-{old.seq:020d}.batch"
    path.write_bytes(json.dumps(old.headers).encode() + b"\n" + old.data)
    q = ReceiveQueue(tmp_path)
    assert not path.exists()
    assert q.pending() == [(2, 5)]
    batch = q.get(2, 5)
    assert batch is not None and batch.ops == old.decoded.ops  # type: ignore[union-attr]


def test_the_oldest_capture_time_follows_what_waits_and_survives_a_restart(
    tmp_path: Path,
) -> None:
    q = ReceiveQueue(tmp_path)
    assert q.oldest_captured_at() is None and q.oldest_age_s(now=1000.0) == 0.0
    q.put_many([incoming(1, captured_at=500.25), incoming(2, captured_at=600.5)])
    q.put_many([incoming(3)])  # an earlier version's batch: no time, not counted
    assert q.oldest_captured_at() == 500.25
    assert q.oldest_age_s(now=1000.0) == 499.75
    q.remove(2, 1)
    assert q.oldest_captured_at() == 600.5
    q.close()

    again = ReceiveQueue(tmp_path)  # read back from the segment's record heads
    assert again.oldest_captured_at() == 500.25, "batch 1 is back with its segment"
    assert again.drop_upto(2, 1) == 1, "the target drops what it applied at start"
    assert again.oldest_captured_at() == 600.5
    again.remove(2, 2)
    assert again.oldest_captured_at() is None, "only a batch that does not say waits"
    assert again.oldest_age_s(now=1000.0) == 0.0


def test_a_source_clock_ahead_of_the_targets_gives_no_negative_age(tmp_path: Path) -> None:
    q = ReceiveQueue(tmp_path)
    q.put_many([incoming(1, captured_at=1000.5)])
    assert q.oldest_age_s(now=1000.0) == 0.0


def test_batches_applied_before_a_restart_are_dropped_up_to_the_position(
    tmp_path: Path,
) -> None:
    q = ReceiveQueue(tmp_path)
    q.put_many([incoming(1), incoming(2), incoming(3)])
    q.remove(2, 1)
    q.remove(2, 2)  # applied, but their segment stays: batch 3 still waits
    q.close()
    again = ReceiveQueue(tmp_path)
    assert again.pending() == [(2, 1), (2, 2), (2, 3)]
    assert again.drop_upto(2, 2) == 2
    assert again.pending() == [(2, 3)] and again.depth() == (1, len(incoming(3).data))
    assert again.drop_upto(1, 99) == 0, "an earlier epoch's position drops nothing of this one"
