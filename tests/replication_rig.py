"""A source and a target wired through a real bus, for replication tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import require
from helpers import running
from tandem.events.bus import Bus
from tandem.events.catalog.vocabulary import ReplicaState
from tandem.events.registry import decode_event
from tandem.events.subjects import EVENTS_STREAM
from tandem.replicator.apply import BatchApplier, ReplicaWriter
from tandem.replicator.applyloop import ApplyLoop
from tandem.replicator.codec import codec_named
from tandem.replicator.manifest import Entry
from tandem.replicator.ops import Op
from tandem.replicator.publisher import JournalPublisher
from tandem.replicator.receivequeue import ReceiveQueue
from tandem.replicator.receiver import JournalReceiver
from tandem.replicator.sendqueue import SendQueue, SendQueueLimits
from tandem.replicator.service import run
from tandem.replicator.settings import ReplicatorSettings
from tandem.replicator.syncproto import ManifestServer, fetch_manifest, tell_end
from tandem.replicator.verify import VerifyResult, verify_and_sync


def tree(root: Path) -> dict[str, object]:
    """Relative path -> bytes (files), link target (symlinks) or 'dir'."""
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            try:
                if p.is_symlink():
                    out[rel] = ("link", os.readlink(p))
                elif p.is_dir():
                    out[rel] = "dir"
                else:
                    out[rel] = p.read_bytes()
            except FileNotFoundError:
                out[rel] = "vanished while reading"  # a tree being changed: compare again
    return out


@dataclass
class Target:
    bus: Bus
    root: Path
    state: Path
    epoch: list[int]
    gap_timeout_s: float = 30.0
    states: list[tuple[ReplicaState, str]] = field(default_factory=list)
    refusals: list[tuple[int, int, str]] = field(default_factory=list)
    #: Batches of an older epoch, skipped (not refusals: expected after a role change).
    skipped: list[tuple[int, int, str]] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)
    #: What the receiver said after each store: (epoch, every batch up to this seq is here).
    held: list[tuple[int, int]] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def stored(self, epoch: int, seq: int) -> None:
        self.held.append((epoch, seq))
        self.loop.wakeup.set()

    def start(self) -> None:
        self.applier = BatchApplier(self.root, self.state / "apply")
        self.queue = ReceiveQueue(self.state / "rq")

        async def report_state(state: ReplicaState, reason: str) -> None:
            self.states.append((state, reason))

        async def alert(code: str, reason: str) -> None:
            self.alerts.append(reason)

        async def refused(epoch: int, seq: int, reason: str, stale: bool) -> None:
            (self.skipped if stale else self.refusals).append((epoch, seq, reason))

        self.loop = ApplyLoop(
            self.queue,
            self.applier,
            report_state=report_state,
            raise_alert=alert,
            gap_timeout_s=self.gap_timeout_s,
        )
        self.receiver = JournalReceiver(
            self.bus,
            "demo",
            "secondary",
            self.queue,
            current_epoch=lambda: self.epoch[0],
            applied_upto=self.loop.applied_upto,
            on_stored=self.stored,
            report_refusal=refused,
        )
        self.manifests = ManifestServer(
            self.bus,
            "demo",
            "secondary",
            self.root,
            wait_applied=self.loop.wait_applied,
            on_begin=self.loop.begin_resync,
            on_end=self.loop.end_resync,
        )
        self.tasks = [
            asyncio.create_task(self.receiver.run()),
            asyncio.create_task(self.loop.run(idle_s=0.05)),
            asyncio.create_task(self.manifests.start()),
        ]

    async def stop(self) -> None:
        await self.manifests.stop()
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self.applier.close()
        self.queue.close()


@dataclass
class Source:
    bus: Bus
    root: Path
    spill: Path
    epoch: int = 1

    def start(self) -> None:
        self.writer = ReplicaWriter(self.root)
        self.lock = threading.Lock()
        self.queue = SendQueue(
            epoch=self.epoch,
            codec=codec_named("zstd"),
            spill_dir=self.spill,
            limits=SendQueueLimits(batch_bytes=64 << 10, batch_age_s=0.01),
        )
        self.publisher = JournalPublisher(self.bus, "demo", self.queue)
        self.task = asyncio.create_task(self.publisher.run())

    def do(self, op: Op) -> None:
        """What an application + capture would do: change the source, then journal it."""
        with self.lock:
            self.writer.apply(op)
            self.queue.submit(op)

    async def verify(self, max_passes: int = 3) -> VerifyResult:
        async def settle() -> None:
            await self.publisher.drain(timeout=30)

        async def fetch() -> dict[str, Entry]:
            upto = (self.epoch, self.queue.last_sealed_seq)
            return await fetch_manifest(self.bus, "demo", "secondary", upto, timeout=30)

        result = await verify_and_sync(
            self.root,
            fetch_replica=fetch,
            submit=self.queue.submit,
            settle=settle,
            exclusive=lambda: self.lock,
            max_passes=max_passes,
        )
        await tell_end(self.bus, "demo", "secondary", result.ok, result.reason)
        return result

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


# -- replicator nodes as the agent runs them (tandem.replicator.service.run) -------------


def fuse_ready() -> None:
    require(
        "FUSE",
        Path("/dev/fuse").exists() and shutil.which("fusermount3") is not None,
        "apt-get install fuse3",
    )


@contextlib.asynccontextmanager
async def node(bus: Bus, root: Path, name: str, **kw: Any) -> AsyncIterator[asyncio.Task[None]]:
    peers = [p for p in ("primary", "secondary") if p != name]
    settings = ReplicatorSettings(cluster="demo", node=name, peers=peers, protected_root=root, **kw)
    async with running(run(settings, bus)) as task:
        yield task


async def events_of(bus: Bus, type_name: str) -> list[Any]:
    info = await bus.js.stream_info(EVENTS_STREAM)
    out: list[Any] = []
    if info.state.messages == 0:
        return out
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        msg = await bus.js.get_msg(EVENTS_STREAM, seq)
        if msg.subject.endswith("." + type_name):
            out.append(decode_event(msg.data))
    return out
