"""The durable outbox's file, on a real file system: what was queued and not sent is read back
in order after the process is gone; what was sent is not; a torn last line is set aside; a
log cut back before its position was written loses nothing queued later."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from helpers import alert
from tandem.events.envelope import Event
from tandem.events.outbox import Outbox
from tandem.events.outbox_file import OutboxFile


class RecordingBus:
    """Stands in for ``Bus.publish`` (the ordering and file logic is tested here; a real bus
    delivery after a SIGKILL is in tests/system/test_durable_outbox.py)."""

    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.published: list[Event] = []

    async def publish(self, event: Event, *, timeout: float) -> None:
        if self.fail:
            raise ConnectionError("bus unavailable")
        self.published.append(event)


def test_unsent_events_are_read_back_in_order_and_sent_ones_are_not(tmp_path: Path) -> None:
    events = [alert(n=i) for i in range(5)]
    log = OutboxFile(tmp_path)
    ends = [log.append(e) for e in events]
    log.sync()
    log.advance(ends[1])  # the first two reached the bus
    log.close()  # the process is gone: only the files remain

    again = OutboxFile(tmp_path)
    assert [s.event.id for s in again.pending()] == [e.id for e in events[2:]]


def test_everything_sent_cuts_the_log_back(tmp_path: Path) -> None:
    log = OutboxFile(tmp_path)
    end = [log.append(alert(n=i)) for i in range(3)][-1]
    log.advance(end)
    assert log.log_path.stat().st_size == 0
    assert OutboxFile(tmp_path).pending() == []


def test_a_torn_last_line_is_set_aside(tmp_path: Path) -> None:
    log = OutboxFile(tmp_path)
    kept = alert(n=1)
    log.append(kept)
    log.close()
    with open(tmp_path / "events.jsonl", "ab") as f:
        f.write(alert(n=2).to_json()[:40])  # killed in the middle of a write
    again = OutboxFile(tmp_path)
    assert [s.event.id for s in again.pending()] == [kept.id]
    assert (tmp_path / "rejected.jsonl").exists()


def test_a_stale_position_after_a_cut_does_not_hide_later_events(tmp_path: Path) -> None:
    log = OutboxFile(tmp_path)
    for i in range(4):
        log.append(alert(n=i))
    log.close()
    # A crash between cutting the log and writing the position: the position points past
    # an empty log. Events queued after the restart must still be sent after the next one.
    (tmp_path / "events.jsonl").write_bytes(b"")
    (tmp_path / "position").write_text("999".rjust(20) + "\n")
    after = OutboxFile(tmp_path)
    assert after.pending() == []
    later = [alert(n=10 + i) for i in range(3)]
    for event in later:
        after.append(event)
    after.close()
    assert [s.event.id for s in OutboxFile(tmp_path).pending()] == [e.id for e in later]


async def test_a_durable_outbox_sends_an_earlier_runs_events_first(tmp_path: Path) -> None:
    earlier = [alert(n=i) for i in range(3)]
    down = RecordingBus(fail=True)
    first = Outbox(down, path=tmp_path, max_backoff_s=0.05)  # type: ignore[arg-type]
    for event in earlier:
        first.put(event)
    first.close()  # the process ends with the bus still away

    up = RecordingBus()
    second = Outbox(up, path=tmp_path)  # type: ignore[arg-type]
    assert second.pending_ids() == [e.id for e in earlier]
    late = alert(n=99)
    second.put(late)
    task = asyncio.create_task(second.run())
    try:
        assert await second.flush(timeout=30)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert [e.id for e in up.published] == [e.id for e in [*earlier, late]]
    second.close()
    assert OutboxFile(tmp_path).pending() == []
