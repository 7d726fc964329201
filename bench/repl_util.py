"""Small helpers of the replication benchmark (bench/replication.py): sizes and units,
percentiles, digests, file helpers, polling, /proc readings, leftover FUSE mounts."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import random
import shutil
import subprocess
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MiB = 1 << 20
MB = 1e6
SEED = 20240611

log = logging.getLogger("bench.replication")


@dataclass(frozen=True)
class Sizes:
    """What a run measures on: full, or ``--quick`` (see the scenarios in bench/replication.py)."""

    seq_mib: int
    inc_bytes: int
    lag_s: float
    sync_writes: int

    @classmethod
    def of(cls, quick: bool) -> Sizes:
        if quick:
            return cls(seq_mib=64, inc_bytes=64 * MiB, lag_s=10.0, sync_writes=200)
        return cls(seq_mib=1024, inc_bytes=1024 * MiB, lag_s=30.0, sync_writes=500)


class BenchError(RuntimeError):
    pass


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (``inf`` entries, e.g. writes never seen, count as such)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def ms(seconds: float) -> float | None:
    return None if not math.isfinite(seconds) else round(seconds * 1000, 3)


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return h.hexdigest()


def folder_digests(root: Path) -> dict[str, str]:
    return {p.name: file_digest(p) for p in sorted(root.iterdir()) if p.is_file()}


def write_zeros(path: Path, size: int) -> None:
    """A fully allocated file of zeros (not sparse)."""
    chunk = bytes(4 * MiB)
    with path.open("wb") as f:
        for _ in range(size // len(chunk)):
            f.write(chunk)
        f.write(bytes(size % len(chunk)))


def random_4k_rate(path: Path, size: int, seconds: float) -> float:
    """Bytes per second of unpaced 4 KiB pwrites at random 4 KiB slots of ``path``."""
    rng = random.Random(SEED)
    buf = os.urandom(4096)
    slots = size // 4096
    fd = os.open(path, os.O_WRONLY)
    try:
        n, t0 = 0, time.monotonic()
        while time.monotonic() - t0 < seconds:
            for _ in range(64):
                os.pwrite(fd, buf, rng.randrange(slots) * 4096)
            n += 64
        return n * 4096 / (time.monotonic() - t0)
    finally:
        os.close(fd)


def pread_or_none(path: Path, size: int, offset: int) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        return os.pread(fd, size, offset)
    finally:
        os.close(fd)


async def until(pred: Callable[[], bool], timeout: float, what: str, every: float = 0.005) -> float:
    """Poll ``pred`` until true; return ``time.monotonic()`` of the first true answer."""
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(every)


def fuse_mounts_under(root: Path) -> list[str]:
    out = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            fields = line.split()
            if "-" not in fields:
                continue
            fstype = fields[fields.index("-") + 1]
            mp = fields[4].replace("\\040", " ")
            if fstype.startswith("fuse") and (mp == str(root) or mp.startswith(f"{root}/")):
                out.append(mp)
    return out


def unmount_leftovers(root: Path) -> None:
    """Last resort after a node died without unmounting (e.g. killed): lazy unmount."""
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    for mp in fuse_mounts_under(root):
        log.warning("unmounting a leftover FUSE mount at %s", mp)
        cmd = [tool, "-uz", mp] if tool else ["umount", "-l", mp]
        subprocess.run(cmd, capture_output=True, timeout=30, check=False)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (Linux), 0 if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def io_written(pid: int) -> int:
    """Bytes a live process caused to be written to storage (Linux ``write_bytes``), 0 if
    unknown."""
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def read_lag_results(
    written_out: Path, seen_out: Path, n: int
) -> tuple[array[float], array[float], dict[str, float]]:
    written, seen = array("d"), array("d")
    with written_out.open("rb") as f:
        written.fromfile(f, n)
    with seen_out.open("rb") as f:
        seen.fromfile(f, n)
    cpu = {
        who: json.loads(Path(f"{out}.json").read_text())["cpu_s"]
        for who, out in (("writer", written_out), ("poller", seen_out))
    }
    return written, seen, cpu


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
