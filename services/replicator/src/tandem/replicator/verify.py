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

#: How long a change may take from the application's write to the replica's manifest with
#: ``watch`` capture: notification delivery, the diff's settle time, sealing, the bus.
IN_FLIGHT_S = 10.0


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
    exact_fixes: bool = False,
    in_flight_s: float = IN_FLIGHT_S,
    in_flight_decides: bool = False,
) -> VerifyResult:
    """``fetch_replica`` returns the replica's manifest as of everything journaled so far;
    ``settle`` waits until what was submitted is stored (drain).

    Passes run until one finds nothing to fix. An application that keeps writing makes
    every pass find the files it wrote since the replica's manifest was taken, so after
    ``max_passes`` the last pass decides (``watch`` with ``in_flight_decides``: any pass
    whose differences are all in flight decides at once):

    - ``exact_fixes`` (the capture holds every write off while a file is read and its fix
      journaled: ``intercept``): each fix reached the journal in order with the live writes,
      so once the replica has applied the journal it matches: verified;
    - otherwise (``watch``): verified if every file still differing was modified in the
      ``in_flight_s`` before the replica's manifest (the journal carries those changes);
      a file that differs and was not touched lately is a real difference: not verified.
    """
    checked = out = sent = 0
    last = SyncStats()
    for n in range(1, max_passes + 1):
        await settle()
        asked_at = time.time()
        replica = await fetch_replica()
        last = await asyncio.to_thread(
            sync_pass,
            source_root,
            replica,
            submit,
            exclusive,
            block_size=block_size,
            progress=on_progress,
            changed_since=asked_at - in_flight_s,
        )
        checked = max(checked, last.checked)
        out += last.out_of_sync
        sent += last.bytes_sent
        if last.out_of_sync == 0:
            reason = (
                "replica matches" if n == 1 else f"replica matches after {n - 1} fixing pass(es)"
            )
            return VerifyResult(True, n, checked, out, sent, reason)
        in_flight = not exact_fixes and last.recent == last.out_of_sync
        if in_flight_decides and in_flight and n < max_passes:
            # What a further pass would find is the same kind of in-flight change: each
            # pass costs two full scans, so with an application that keeps writing the
            # answer would only come later (3 passes took 68 s on 69,000 files), not truer.
            await settle()
            return _in_flight(n, checked, out, sent, last, in_flight_s)
    await settle()
    if exact_fixes:
        return VerifyResult(
            True, max_passes, checked, out, sent,
            f"replica matches once it applies the journal: the last of {max_passes} passes "
            f"fixed {last.out_of_sync} file(s) the application kept writing, each under the "
            "capture's lock, in order with its writes",
        )  # fmt: skip
    if last.recent == last.out_of_sync:
        return _in_flight(max_passes, checked, out, sent, last, in_flight_s)
    return VerifyResult(
        False, max_passes, checked, out, sent,
        f"still differing after {max_passes} passes: {last.out_of_sync - last.recent} file(s) "
        f"not written in the last {in_flight_s:.0f}s differ",
    )  # fmt: skip


def _in_flight(
    passes: int, checked: int, out: int, sent: int, last: SyncStats, in_flight_s: float
) -> VerifyResult:
    """Verified: every file still differing was written in the ``in_flight_s`` before the
    replica's manifest, was fixed by this pass too, and its latest change is in the journal."""
    return VerifyResult(
        True, passes, checked, out, sent,
        f"replica matches but for {last.recent} file(s) written in the last "
        f"{in_flight_s:.0f}s, which the journal is carrying",
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
