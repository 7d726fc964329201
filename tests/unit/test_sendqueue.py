"""The send queue: batching by size and age, spill to disk, quota with back-pressure, the
age of the oldest op the bus does not have yet."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tandem.replicator.batch import H_CAPTURED_AT, Batch, captured_at, decode_body, pack, unpack
from tandem.replicator.codec import codec_named
from tandem.replicator.ops import Op, OpKind
from tandem.replicator.sendqueue import SendQueue, SendQueueLimits


def queue(
    tmp_path: Path,
    alerts: list[str] | None = None,
    cleared: list[str] | None = None,
    **limits: float,
) -> SendQueue:
    return SendQueue(
        epoch=4,
        codec=codec_named("none"),
        spill_dir=tmp_path / "spill",
        limits=SendQueueLimits(**limits),  # type: ignore[arg-type]
        on_alert=(alerts.append if alerts is not None else lambda r: None),
        on_clear=(cleared.append if cleared is not None else lambda r: None),
    )


def write(i: int, size: int = 1000) -> Op:
    return Op(OpKind.WRITE, f"f{i}", data=bytes(size))


def test_a_batch_is_sealed_when_it_is_full(tmp_path: Path) -> None:
    q = queue(tmp_path, batch_bytes=3000, batch_age_s=60)
    for i in range(7):
        q.submit(write(i))
    sealed = [q.take(0), q.take(0), q.take(0)]
    assert q.take(0) is None, "the rest is still open"
    batches = [unpack(s.data, s.headers) for s in sealed if s is not None]
    # A batch never grows past batch_bytes: two 1000-byte writes fit, a third would not.
    assert [(b.epoch, b.seq, b.first_op, len(b.ops)) for b in batches] == [
        (4, 1, 0, 2),
        (4, 2, 2, 2),
        (4, 3, 4, 2),
    ]


def test_a_large_write_is_journaled_in_parts_that_fit_a_batch(tmp_path: Path) -> None:
    q = queue(tmp_path, batch_bytes=3000, max_write_bytes=1000, batch_age_s=60)
    q.submit(Op(OpKind.WRITE, "big", offset=10, data=bytes(range(250)) * 10))
    q.seal_now()
    parts = []
    while (s := q.take(0)) is not None:
        parts.extend(unpack(s.data, s.headers).ops)
        assert len(s.data) <= 3000 + 64
    assert [(p.offset, len(p.data)) for p in parts] == [(10, 1000), (1010, 1000), (2010, 500)]
    assert b"".join(p.data for p in parts) == bytes(range(250)) * 10


def test_a_batch_is_sealed_when_it_is_old(tmp_path: Path) -> None:
    q = queue(tmp_path, batch_bytes=1 << 20, batch_age_s=0.5)
    q.submit(write(1))
    assert not q.seal_if_older(now=q._open_since + 0.1)
    assert q.seal_if_older(now=q._open_since + 0.6)
    sealed = q.take(0)
    assert sealed is not None and unpack(sealed.data, sealed.headers).ops == (write(1),)


def test_batches_spill_to_disk_and_come_back_in_order(tmp_path: Path) -> None:
    q = queue(tmp_path, batch_bytes=1, memory_bytes=2500)
    for i in range(6):
        q.submit(write(i))
    assert q.spilled_bytes > 0 and len(list((tmp_path / "spill").iterdir())) >= 3
    seen = []
    while (s := q.take(0)) is not None:
        seen.append(unpack(s.data, s.headers).ops[0].path)
        q.acked(s.seq)
    assert seen == [f"f{i}" for i in range(6)]
    assert list((tmp_path / "spill").iterdir()) == [] and q.depth() == (0, 0)


def test_over_quota_writers_wait_and_nothing_is_dropped(tmp_path: Path) -> None:
    alerts: list[str] = []
    cleared: list[str] = []
    q = queue(tmp_path, alerts, cleared, batch_bytes=1, memory_bytes=0, spill_quota_bytes=2500)
    for i in range(3):
        q.submit(write(i))  # three spilled batches: over the quota now
    blocked = threading.Thread(target=q.submit, args=(write(3),))
    blocked.start()
    blocked.join(timeout=1.5)
    assert blocked.is_alive(), "the writer waits for room"
    assert len(alerts) == 1 and "over its quota" in alerts[0]
    first = q.take(0)
    assert first is not None
    q.acked(first.seq)
    blocked.join(timeout=10)
    assert not blocked.is_alive()
    # Back under the quota: the alert's condition ended (its AlertCleared).
    assert len(cleared) == 1 and "back under its quota" in cleared[0]
    paths = []
    while (s := q.take(0)) is not None:
        paths.append(unpack(s.data, s.headers).ops[0].path)
    assert paths == ["f1", "f2", "f3"]


def test_a_spilled_batch_is_kept_plain_and_encoded_when_taken(tmp_path: Path) -> None:
    """Spilling does not run the codec in the writer's path: the file holds the plain body,
    and ``take`` compresses it like a batch kept in memory."""
    q = SendQueue(
        epoch=4,
        codec=codec_named("zstd"),
        spill_dir=tmp_path / "spill",
        limits=SendQueueLimits(batch_bytes=1, memory_bytes=0),
    )
    q.submit(Op(OpKind.WRITE, "a", offset=7, data=b"x" * 5000))
    q.submit(Op(OpKind.TRUNCATE, "a", size=3))
    [first, second] = sorted((tmp_path / "spill").iterdir())
    assert decode_body(first.read_bytes()).ops == (
        Op(OpKind.WRITE, "a", offset=7, data=b"x" * 5000),
    )
    taken = q.take(0)
    assert taken is not None and taken.headers["Tandem-Codec"] == "zstd"
    assert taken.ops == 1 and len(taken.data) < 5000, "compressed when taken"
    assert unpack(taken.data, taken.headers).ops == decode_body(first.read_bytes()).ops
    assert second.exists()


def test_the_oldest_age_grows_until_the_bus_has_the_batch(tmp_path: Path) -> None:
    q = queue(tmp_path, batch_bytes=1 << 20, batch_age_s=60)
    assert q.oldest_age_s() == 0.0, "nothing waits"
    before = time.monotonic()
    q.submit(write(1))  # the open batch counts: the bus does not have it either
    at_5, at_9 = q.oldest_age_s(now=before + 5), q.oldest_age_s(now=before + 9)
    assert 0 < at_5 <= 5 and at_9 == pytest.approx(at_5 + 4)
    q.submit(write(2))  # a later op of the same batch: still the first one's age
    assert q.oldest_age_s(now=before + 9) == at_9
    q.seal_now()
    sealed = q.take(0)
    assert sealed is not None
    assert q.oldest_age_s(now=before + 9) == at_9, "taken is not stored: it still waits"
    q.acked(sealed.seq)
    assert q.oldest_age_s(now=before + 9) == 0.0


def test_the_oldest_age_is_the_first_unacked_batches_spilled_or_not(tmp_path: Path) -> None:
    q = queue(tmp_path, batch_bytes=1, memory_bytes=1500)  # one batch in memory, then spill
    for i in range(3):
        q.submit(write(i))
    assert q.spilled_bytes > 0
    now = time.monotonic() + 100
    ages = []
    while (s := q.take(0)) is not None:
        ages.append(q.oldest_age_s(now=now))
        q.acked(s.seq)
    # each ack leaves a younger oldest batch (captured later), and none at the end
    assert ages[0] >= ages[1] >= ages[2] > 0
    assert q.oldest_age_s(now=now) == 0.0 and q.depth() == (0, 0)


def test_a_batch_carries_the_wall_time_of_its_first_capture(tmp_path: Path) -> None:
    q = queue(tmp_path, batch_bytes=1, memory_bytes=0)  # spilled too: the time stays known
    before = time.time()
    q.submit(write(1))
    after = time.time()
    sealed = q.take(0)
    assert sealed is not None
    got = captured_at(sealed.headers)
    assert got is not None and before - 1e-6 <= got <= after + 1e-6
    assert sealed.headers[H_CAPTURED_AT] == f"{got:.6f}"
    assert unpack(sealed.data, sealed.headers).ops == (write(1),)


def test_a_batch_without_a_capture_time_is_still_accepted() -> None:
    batch = Batch(4, 1, 0, (write(1),))
    data, headers = pack(batch, codec_named("zstd"))  # as an earlier version sent it
    assert H_CAPTURED_AT not in headers and captured_at(headers) is None
    assert unpack(data, headers) == batch
    assert captured_at({**headers, H_CAPTURED_AT: "soon"}) is None
    assert unpack(data, {**headers, H_CAPTURED_AT: "soon"}) == batch
