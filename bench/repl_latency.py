"""Scenarios 3 and 4 of the replication benchmark (bench/replication.py): the lag of paced
4 KiB random writes, and the write latency sync mode adds."""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
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
    ms,
    percentile,
    random_4k_rate,
    read_lag_results,
    tail,
    until,
    write_zeros,
)

# -- 3. lag ------------------------------------------------------------------------------------


async def lag(bench: Bench) -> dict[str, Any]:
    size, rate, duration = 64 * MiB, bench.lag_rate, bench.sizes.lag_s
    n = int(rate * duration / 4096)
    src, dst = bench.sides("lag")
    for side in (src, dst):
        await asyncio.to_thread(write_zeros, side / "lag.bin", size)
    common = {"n": n, "seed": SEED, "nslots": size // 4096}
    written_out, seen_out = bench.root / "lag" / "written.bin", bench.root / "lag" / "seen.bin"
    poll_spec = {
        **common,
        "path": str(dst / "lag.bin"),
        "out": str(seen_out),
        "timeout_s": 3 * duration + 60,
        "interval_s": 0.001,
    }
    write_spec = {**common, "path": str(src / "lag.bin"), "out": str(written_out)}
    write_spec["rate_bytes_s"] = rate
    # Baseline: how fast one unpaced writer gets 4 KiB random writes through a bare FUSE
    # passthrough on this machine (the ceiling for the paced writer below).
    base = bench.root / "lag-passthrough" / "data"
    base.mkdir(parents=True)
    await asyncio.to_thread(write_zeros, base / "lag.bin", size)
    async with bench.passthrough("lag-passthrough", base):
        ceiling = await asyncio.to_thread(
            random_4k_rate, base / "lag.bin", size, min(5.0, duration)
        )
    poller = writer = None
    async with bench.pair("lag", src, dst, "intercept"):
        try:
            args = ["poll", json.dumps(poll_spec)]
            poller = await bench.spawn("repl_lag.py", args, dst.parent / "poll.log", pipe=True)
            await bench.ready_line(poller, "the lag poller")
            writer = await bench.spawn(
                "repl_lag.py", ["write", json.dumps(write_spec)], src.parent / "write.log"
            )
            await asyncio.wait_for(writer.wait(), 4 * duration + 60)
            if writer.returncode != 0:
                raise BenchError(f"the lag writer failed:\n{tail(bench.logs[writer.pid])}")
            await asyncio.wait_for(poller.wait(), 3 * duration + 90)
        finally:
            await bench.stop(writer, 5)
            await bench.stop(poller, 5)

        def same() -> bool:
            return file_digest(src / "lag.bin") == file_digest(dst / "lag.bin")

        await until(same, 60, "the lag replica to match", every=0.5)
    found = await asyncio.to_thread(read_lag_results, written_out, seen_out, n)
    written, seen, load_cpu = found
    lags = [s - w if s > 0 else math.inf for w, s in zip(written, seen, strict=True)]
    measured = sum(1 for x in lags if math.isfinite(x))
    span = written[-1] - written[0] + 4096 / rate
    by_second: dict[int, list[float]] = {}
    for w, x in zip(written, lags, strict=True):
        by_second.setdefault(int(w - written[0]), []).append(x)
    p99_by_second = [ms(percentile(v, 99)) for _, v in sorted(by_second.items())]
    return {
        "metrics": {
            "lag_ms_p50": ms(percentile(lags, 50)),
            "lag_ms_p99": ms(percentile(lags, 99)),
            "lag_ms_max": ms(max(lags)),
            "lag_writes_measured": measured,
            "lag_achieved_mb_s": round(n * 4096 / MB / span, 2),
            "fuse_passthrough_4k_mb_s": round(ceiling / MB, 2),
        },
        "ratios": {},
        "details": {
            "writes": n,
            "writes_never_seen": n - measured,
            "write_size": 4096,
            "file_size": size,
            "paced_mb_s": rate / MB,
            "achieved_mb_s": round(n * 4096 / MB / span, 2),
            "duration_s": round(span, 2),
            "poll_interval_ms": 1,
            "lag_ms_p99_by_second": p99_by_second,
            "cpu_s": load_cpu,
            "note": "writes never seen count as infinite lag in the percentiles",
        },
    }


# -- 4. sync mode ------------------------------------------------------------------------------


async def sync_mode(bench: Bench) -> dict[str, Any]:
    n, warmup, size = bench.sizes.sync_writes, 20, 16 * MiB
    rng = random.Random(SEED + 4)
    offsets = [rng.randrange(size // 4096) * 4096 for _ in range(n + warmup)]
    payloads = [os.urandom(4096) for _ in range(n + warmup)]

    def timed_writes(path: Path) -> list[float]:
        out = []
        fd = os.open(path, os.O_WRONLY)
        try:
            for i, (offset, data) in enumerate(zip(offsets, payloads, strict=True)):
                t0 = time.perf_counter()
                os.pwrite(fd, data, offset)
                os.fsync(fd)
                if i >= warmup:
                    out.append(time.perf_counter() - t0)
        finally:
            os.close(fd)
        return out

    results: dict[str, list[float]] = {}
    for mode in ("async", "sync"):
        name = f"sync-{mode}"
        src, dst = bench.sides(name)
        for side in (src, dst):
            await asyncio.to_thread(write_zeros, side / "sync.bin", size)
        extra = {"mode": "sync", "sync_policy": "block"} if mode == "sync" else {}
        async with bench.pair(name, src, dst, "intercept", **extra):
            results[mode] = await asyncio.to_thread(timed_writes, src / "sync.bin")

            def same(src: Path = src, dst: Path = dst) -> bool:
                return file_digest(src / "sync.bin") == file_digest(dst / "sync.bin")

            await until(same, 60, f"{name}: the replica to match", every=0.2)
    plain, sync = results["async"], results["sync"]
    return {
        "metrics": {
            "sync_write_ms_p99": ms(percentile(sync, 99)),
            "plain_write_ms_p99": ms(percentile(plain, 99)),
            "sync_write_ms_p50": ms(percentile(sync, 50)),
            "plain_write_ms_p50": ms(percentile(plain, 50)),
        },
        "ratios": {
            "sync_added_ms_p99": ms(percentile(sync, 99) - percentile(plain, 99)),
        },
        "details": {
            "writes": n,
            "warmup_writes": warmup,
            "write": "os.pwrite 4 KiB at a random 4 KiB offset of a 16 MiB file + os.fsync",
            "sync_settings": "mode=sync, sync_policy=block",
            "plain_settings": "mode=async (a target running)",
        },
    }
