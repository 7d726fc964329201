"""Scenarios 1 and 2 of the replication benchmark (bench/replication.py): sequential
throughput against a bare FUSE passthrough, and an incremental change against rsync."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from repl_harness import Bench
from repl_util import (
    MB,
    SEED,
    BenchError,
    MiB,
    file_digest,
    folder_digests,
    pread_or_none,
    until,
)

BLOCK = 64 << 10  # the incremental scenario's block (the watch backend's block size)


# -- 1. sequential -----------------------------------------------------------------------------


async def sequential(bench: Bench) -> dict[str, Any]:
    n = bench.sizes.seq_mib
    size = n * MiB
    bufs = [os.urandom(MiB) for _ in range(n)]
    expected = hashlib.sha256(b"".join(bufs)).hexdigest()

    def write_all(path: Path) -> tuple[float, float]:
        t0 = time.monotonic()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            for b in bufs:
                os.write(fd, b)
            os.fsync(fd)
        finally:
            os.close(fd)
        return t0, time.monotonic()

    base = bench.root / "seq-passthrough" / "data"
    base.mkdir(parents=True)
    async with bench.passthrough("seq-passthrough", base):
        t0, t1 = await asyncio.to_thread(write_all, base / "seq.bin")
        if await asyncio.to_thread(file_digest, base / "seq.bin") != expected:
            raise BenchError("the passthrough file differs from what was written")
    passthrough_s = t1 - t0
    # The disk itself: the same writes to a plain folder of the same filesystem.
    plain = bench.root / "seq-disk"
    plain.mkdir(parents=True)
    await asyncio.to_thread(os.sync)
    d0, d1 = await asyncio.to_thread(write_all, plain / "seq.bin")
    await asyncio.to_thread((plain / "seq.bin").unlink)
    disk_s = d1 - d0

    src, dst = bench.sides("seq")
    replica = dst / "seq.bin"

    def complete() -> bool:  # applied in order: the last MiB is there last
        with contextlib.suppress(FileNotFoundError):
            if replica.stat().st_size == size:
                return pread_or_none(replica, MiB, size - MiB) == bufs[-1]
        return False

    async with bench.pair("seq", src, dst, "intercept"):
        t0, t_src = await asyncio.to_thread(write_all, src / "seq.bin")
        t_done = await until(complete, 60 + n, "the replica to hold the file")
        if await asyncio.to_thread(file_digest, replica) != expected:
            raise BenchError("the replica differs from what was written")
    written_mb = bench.observations.get("seq", {}).get("write_bytes_mb", {})
    return {
        "metrics": {
            "intercept_seq_mb_s": round(size / MB / (t_done - t0), 1),
            "fuse_passthrough_seq_mb_s": round(size / MB / passthrough_s, 1),
            "intercept_seq_source_mb_s": round(size / MB / (t_src - t0), 1),
            "disk_seq_mb_s": round(size / MB / disk_s, 1),
            # Bytes the source, nats-server and target wrote to the (one, shared) disk per
            # byte replicated: the send spill, the journal, the receive queue, the replica.
            "seq_disk_write_amplification": round(sum(written_mb.values()) / (size / MB), 2),
        },
        "ratios": {
            "intercept_over_passthrough": round(passthrough_s / (t_done - t0), 3),
        },
        "details": {
            "bytes": size,
            "write_size": MiB,
            "intercept_s": round(t_done - t0, 3),
            "intercept_source_write_s": round(t_src - t0, 3),
            "replica_after_source_s": round(t_done - t_src, 3),
            "passthrough_s": round(passthrough_s, 3),
        },
    }


# -- 2. incremental ----------------------------------------------------------------------------


async def incremental(bench: Bench) -> dict[str, Any]:
    nfiles = 64
    file_size = bench.sizes.inc_bytes // nfiles
    per_file = file_size // BLOCK
    rng = random.Random(SEED)
    picks = rng.sample(range(nfiles * per_file), round(0.05 * nfiles * per_file))
    changes = [
        (f"f{b // per_file:02d}.bin", (b % per_file) * BLOCK, rng.randbytes(BLOCK)) for b in picks
    ]
    pristine = bench.root / "inc-pristine"
    pristine.mkdir()

    def make_pristine() -> None:
        for i in range(nfiles):
            (pristine / f"f{i:02d}.bin").write_bytes(os.urandom(file_size))

    def copy(dst: Path) -> None:
        dst.mkdir(parents=True, exist_ok=True)
        for p in pristine.iterdir():
            shutil.copy2(p, dst / p.name)

    def rewrite(root: Path) -> None:
        for name, offset, data in changes:
            fd = os.open(root / name, os.O_WRONLY)
            try:
                os.pwrite(fd, data, offset)
            finally:
                os.close(fd)

    if shutil.which("rsync") is None:
        raise BenchError("rsync is missing (apt-get install rsync)")
    await asyncio.to_thread(make_pristine)
    after = bench.root / "inc-expected"
    await asyncio.to_thread(copy, after)
    await asyncio.to_thread(rewrite, after)
    expected = await asyncio.to_thread(folder_digests, after)

    timings: dict[str, float] = {}
    rewrite_s: dict[str, float] = {}
    for capture in ("watch", "intercept"):
        name = f"inc-{capture}"
        src, dst = bench.sides(name)
        await asyncio.to_thread(copy, src)
        await asyncio.to_thread(copy, dst)
        pending = set(range(len(changes)))

        def matches(dst: Path = dst, pending: set[int] = pending) -> bool:
            for i in list(pending):
                cname, offset, data = changes[i]
                if pread_or_none(dst / cname, BLOCK, offset) == data:
                    pending.discard(i)
            return not pending

        async with bench.pair(name, src, dst, capture):
            t0 = time.monotonic()
            await asyncio.to_thread(rewrite, src)
            rewrite_s[capture] = time.monotonic() - t0
            t_done = await until(matches, 120 + bench.sizes.inc_bytes / MiB, name, every=0.01)
            if await asyncio.to_thread(folder_digests, dst) != expected:
                raise BenchError(f"{name}: the replica differs from the source")
        timings[capture] = t_done - t0

    old, new = bench.root / "inc-rsync" / "old", bench.root / "inc-rsync" / "new"
    await asyncio.to_thread(copy, old)
    await asyncio.to_thread(copy, new)
    await asyncio.to_thread(rewrite, new)
    cmd = ["rsync", "-a", "--no-whole-file", "--inplace", f"{new}/", f"{old}/"]
    await asyncio.to_thread(os.sync)  # as before each pair: no earlier writeback in its time
    t0 = time.monotonic()
    done = await asyncio.to_thread(subprocess.run, cmd, capture_output=True, timeout=1800)
    rsync_s = time.monotonic() - t0
    if done.returncode != 0:
        raise BenchError(f"rsync failed: {done.stderr.decode(errors='replace')}")
    if await asyncio.to_thread(folder_digests, old) != expected:
        raise BenchError("rsync: the copy differs from the source")
    return {
        "metrics": {
            "watch_incremental_s": round(timings["watch"], 3),
            "intercept_incremental_s": round(timings["intercept"], 3),
            "rsync_incremental_s": round(rsync_s, 3),
        },
        "ratios": {
            "rsync_over_watch": round(rsync_s / timings["watch"], 3),
            "rsync_over_intercept": round(rsync_s / timings["intercept"], 3),
        },
        "details": {
            "files": nfiles,
            "bytes": nfiles * file_size,
            "blocks_rewritten": len(changes),
            "block_size": BLOCK,
            "rsync": " ".join(cmd[:4]) + " SRC/ DST/",
            "rewrite_s": {k: round(v, 3) for k, v in rewrite_s.items()},
            "replica_after_rewrite_s": {k: round(timings[k] - v, 3) for k, v in rewrite_s.items()},
        },
    }
