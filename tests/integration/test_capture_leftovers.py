"""What a killed agent leaves behind never blocks the next start, and nothing starts an
application while the protected folder is not captured (issue 16, items 2 and 3).

Real FUSE mounts: a separate process (``tests/capture_holder.py``) holds an intercept mount
and is SIGKILLed (a dead mount: "Transport endpoint is not connected") or keeps it live (a
mount another process still serves)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from nats.js.errors import NotFoundError

from helpers import eventually
from replication_rig import events_of, fuse_ready, node
from tandem.events.bus import Bus
from tandem.events.subjects import JOURNAL_STREAM, journal_subject
from tandem.replicator.batch import unpack
from tandem.replicator.intercept_mounts import clear_dead_mount

HOLDER = Path(__file__).resolve().parent.parent / "capture_holder.py"


@contextmanager
def holding(folder: Path) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, str(HOLDER), str(folder)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "mounted", "the holder did not mount"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def dead_mount(folder: Path) -> None:
    """Leave what an agent SIGKILLed while it was the source leaves: a dead FUSE mount."""
    with holding(folder) as proc:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        try:
            os.statvfs(folder)
        except OSError as exc:
            assert exc.errno == 107, exc  # ENOTCONN: Transport endpoint is not connected
        else:
            raise AssertionError("a SIGKILLed FUSE daemon left a working mount")
        # Keep the mount: leave the context without unmounting it.
        proc.returncode = -9


def test_a_dead_mount_is_removed_and_a_live_one_refused(tmp_path: Path) -> None:
    fuse_ready()
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "kept").write_text("written before the crash")
    assert clear_dead_mount(folder) == ""  # nothing mounted: nothing done
    with holding(folder) as proc:
        try:
            clear_dead_mount(folder)
        except Exception as exc:
            assert "already captured by another live intercept mount" in str(exc)
        else:
            raise AssertionError("a live mount of another process must be refused")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        said = clear_dead_mount(folder)
        assert "removed the dead intercept mount" in said
        assert f"its process {proc.pid} is gone" in said
    assert (folder / "kept").read_text() == "written before the crash"


async def test_a_source_starts_over_a_dead_mount_a_killed_agent_left(
    bus: Bus, tmp_path: Path
) -> None:
    fuse_ready()
    source = tmp_path / "a" / "data"
    source.mkdir(parents=True)
    (source / "before").write_text("from the previous run")
    await asyncio.to_thread(_hold_then_kill, source)
    async with node(bus, source, "primary", capture="intercept", initial_role="active"):
        await eventually(
            lambda: _started(bus), timeout=30, what="the source to start over the dead mount"
        )
        await asyncio.to_thread((source / "after").write_bytes, b"captured")

        async def journaled() -> bool:
            try:
                last = await bus.js.get_last_msg(JOURNAL_STREAM, journal_subject("demo"))
            except NotFoundError:
                return False
            batch = unpack(last.data, dict(last.headers or {}))
            return any(op.path == "after" for op in batch.ops)

        await eventually(journaled, timeout=30, what="the write in the journal")
        assert (source / "before").read_text() == "from the previous run"


async def test_a_capture_that_cannot_start_is_an_alert_cleared_once_it_runs(
    bus: Bus, tmp_path: Path
) -> None:
    """Another process serves a live mount on the folder: the source refuses to capture it
    twice, raises replicator.capture_failed (once, though it tries again), and clears it when
    its capture is live after that process let go."""
    fuse_ready()
    source = tmp_path / "a" / "data"
    source.mkdir(parents=True)
    with holding(source) as proc:
        async with node(bus, source, "primary", capture="intercept", initial_role="active"):
            await eventually(
                lambda: _alerts(bus, "AlertRaised"), timeout=30, what="the capture_failed alert"
            )
            await asyncio.sleep(2)  # a few more tries: still one alert
            [raised] = await _alerts(bus, "AlertRaised")
            assert "already captured by another live intercept mount" in raised.payload.message
            assert "the applications stay stopped" in raised.payload.message
            assert not await _started(bus)
            proc.send_signal(signal.SIGTERM)  # it unmounts and ends
            await asyncio.to_thread(proc.wait, 10)
            await eventually(lambda: _started(bus), timeout=60, what="the capture to start")
            [cleared] = await _alerts(bus, "AlertCleared")
            assert "is live at epoch 1" in cleared.payload.reason


def _hold_then_kill(folder: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(HOLDER), str(folder)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "mounted"
    proc.kill()
    proc.wait(10)


async def _started(bus: Bus) -> bool:
    return bool(await events_of(bus, "ReplicationStarted"))


async def _alerts(bus: Bus, type_name: str) -> list:  # type: ignore[type-arg]
    return [
        e for e in await events_of(bus, type_name) if e.payload.code == "replicator.capture_failed"
    ]
