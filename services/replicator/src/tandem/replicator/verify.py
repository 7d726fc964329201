"""Verify & synchronize driven from the source (the Active): passes until nothing differs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from tandem.replicator.manifest import BLOCK, Entry, SyncStats
from tandem.replicator.ops import Op
from tandem.replicator.syncpass import sync_pass


@dataclass
class VerifyResult:
    ok: bool
    passes: int
    files_checked: int
    files_out_of_sync: int
    bytes_sent: int
    reason: str


async def verify_and_sync(
    source_root: Path,
    *,
    fetch_replica: Callable[[], Awaitable[dict[str, Entry]]],
    submit: Callable[[Op], None],
    settle: Callable[[], Awaitable[None]],
    exclusive: Callable[[], AbstractContextManager[object]],
    max_passes: int = 3,
    block_size: int = BLOCK,
    on_progress: Callable[[SyncStats, int], None] = lambda s, t: None,
) -> VerifyResult:
    """``fetch_replica`` returns the replica's manifest as of everything journaled so far;
    ``settle`` waits until what was submitted is stored (drain)."""
    checked = out = sent = 0
    for n in range(1, max_passes + 1):
        await settle()
        replica = await fetch_replica()
        stats = await asyncio.to_thread(
            sync_pass,
            source_root,
            replica,
            submit,
            exclusive,
            block_size=block_size,
            progress=on_progress,
        )
        checked = max(checked, stats.checked)
        out += stats.out_of_sync
        sent += stats.bytes_sent
        if stats.out_of_sync == 0:
            reason = (
                "replica matches" if n == 1 else f"replica matches after {n - 1} fixing pass(es)"
            )
            return VerifyResult(True, n, checked, out, sent, reason)
    await settle()
    return VerifyResult(
        False, max_passes, checked, out, sent,
        f"still differing after {max_passes} passes: the source keeps changing the same data",
    )  # fmt: skip


class Throttle:
    """Lets a call through at most once per ``interval_s``."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last = 0.0

    def ready(self) -> bool:
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            self._last = now
            return True
        return False
