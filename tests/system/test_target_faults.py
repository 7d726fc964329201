"""A target killed with SIGKILL while it applies, and a target whose disk fills up: real
processes, a real tmpfs; the replica converges and nothing is skipped."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import require
from helpers import eventually, running
from replication_rig import tree
from tandem.events.bus import Bus
from tandem.events.embedded import NatsServer
from tandem.replicator.service import run
from tandem.replicator.settings import ReplicatorSettings

pytestmark = pytest.mark.system


def target_process(url: str, replica: Path, log: Path, **extra: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TANDEM_BUS_SERVERS": url,
        "TANDEM_REPLICATOR_CLUSTER": "demo",
        "TANDEM_REPLICATOR_NODE": "secondary",
        "TANDEM_REPLICATOR_PEERS": '["primary"]',
        "TANDEM_REPLICATOR_PROTECTED_ROOT": str(replica),
        "TANDEM_REPLICATOR_STATE_DIR": str(replica.parent / "state"),
        **extra,
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tandem.replicator"], env=env, stdout=out, stderr=out
        )


@contextlib.asynccontextmanager
async def active(bus: Bus, root: Path):  # type: ignore[no-untyped-def]
    settings = ReplicatorSettings(
        cluster="demo",
        node="primary",
        peers=["secondary"],
        protected_root=root,
        initial_role="active",
    )
    async with running(run(settings, bus)):
        yield


def churn(root: Path, rounds: int) -> None:
    """Operations that would corrupt the replica if any were applied twice (rename chains,
    appends, deletes)."""
    for r in range(rounds):
        d = root / f"r{r % 7}"
        d.mkdir(exist_ok=True)
        f = d / "log"
        with f.open("ab") as out:
            out.write(os.urandom(3000))
        (d / "log").rename(d / "log.1")
        if (d / "log.2").exists():
            (d / "log.2").unlink()
        (d / "log.1").rename(d / "log.2")


async def test_a_target_killed_while_applying_converges_without_duplicate_effects(
    bus: Bus, nats_server: NatsServer, tmp_path: Path
) -> None:
    source, replica = tmp_path / "a", tmp_path / "b" / "data"
    source.mkdir()
    replica.mkdir(parents=True)
    log = tmp_path / "target.log"
    async with active(bus, source):
        target = target_process(nats_server.url, replica, log)
        try:
            for _ in range(3):
                await asyncio.to_thread(churn, source, 150)
                await asyncio.sleep(0.3)
                target.send_signal(signal.SIGKILL)  # no chance to finish the batch it is applying
                target.wait(timeout=30)
                target = target_process(nats_server.url, replica, log)
            await eventually(lambda: tree(replica) == tree(source), timeout=90, what="convergence")
        finally:
            target.send_signal(signal.SIGTERM)
            target.wait(timeout=30)


async def test_a_full_disk_pauses_apply_with_an_alert_and_nothing_is_skipped(
    bus: Bus, nats_server: NatsServer, tmp_path: Path
) -> None:
    require(
        "tmpfs mounts (root)",
        os.geteuid() == 0 and shutil.which("mount") is not None,
        "run as root",
    )
    source, disk = tmp_path / "a", tmp_path / "disk"
    source.mkdir()
    disk.mkdir()
    await asyncio.to_thread(
        subprocess.run, ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], check=True
    )
    replica = disk / "data"
    replica.mkdir()
    target = None
    try:
        async with active(bus, source):
            target = target_process(
                nats_server.url,
                replica,
                tmp_path / "target.log",
                TANDEM_REPLICATOR_STATE_DIR=str(tmp_path / "state"),
            )
            (source / "small").write_bytes(b"fits")
            await eventually(
                lambda: (replica / "small").exists(), timeout=60, what="the first file"
            )
            await asyncio.to_thread((source / "big").write_bytes, os.urandom(3 * 1024 * 1024))
            await eventually(
                lambda: _paused(tmp_path / "target.log"), timeout=60, what="apply to pause"
            )
            await asyncio.to_thread((source / "after").write_bytes, b"must not be skipped")
            await eventually(lambda: _journal_has_after(bus), timeout=30, what="the later batch")
            assert not (replica / "after").exists(), "nothing after the failed batch is applied"
            alerts = await _alerts(bus)
            assert "replicator.disk_full" in alerts
            await asyncio.to_thread(
                subprocess.run, ["mount", "-o", "remount,size=16m", str(disk)], check=True
            )
            await eventually(
                lambda: tree(replica) == tree(source), timeout=60, what="apply to resume"
            )
    finally:
        if target is not None:
            target.send_signal(signal.SIGTERM)
            target.wait(timeout=30)
        await asyncio.to_thread(subprocess.run, ["umount", "-l", str(disk)], check=False)


async def _alerts(bus: Bus) -> list[str]:
    from tandem.events.registry import decode_event
    from tandem.events.subjects import EVENTS_STREAM

    info = await bus.js.stream_info(EVENTS_STREAM)
    codes = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await bus.js.get_msg(EVENTS_STREAM, seq)
        if msg.subject.endswith(".AlertRaised"):
            codes.append(decode_event(msg.data).payload.code)  # type: ignore[attr-defined]
    return codes


async def _journal_has_after(bus: Bus) -> bool:
    from tandem.events.subjects import JOURNAL_STREAM

    info = await bus.js.stream_info(JOURNAL_STREAM)
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        if b"after" in (await bus.js.get_msg(JOURNAL_STREAM, seq)).data:
            return True
    return False


def _paused(log: Path) -> bool:
    return "disk full" in log.read_text()
