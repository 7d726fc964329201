"""Replication benchmark: a source node and a target node on loopback, one embedded nats-server
(file storage, ``sync_interval: always``) per pair, each figure next to a baseline measured in
the same run.

    python bench/replication.py [--quick] [--out bench/results/replication.json]
                                [--only seq,incremental,lag,sync] [--tmp DIR] [--keep]
                                [--profile DIR] [--lag-mb-s 20]

Every measured phase (each pair, each baseline, rsync) starts after ``os.sync()``: the
writeback of the phase before must not land in its time. The passthrough baseline tunes the
C allocator as a replicator node does (``tandem.replicator.allocator``).

``--profile DIR`` samples each node with py-spy (if on PATH) while a pair is measured;
``--keep`` keeps the folders and node logs; ``--lag-mb-s`` changes the lag scenario's rate
(diagnosis only: the target is defined at 20 MB/s).

Scenarios (sizes: full / ``--quick``):

1. sequential: 1024 / 64 MiB written as 1 MiB ``os.write`` calls (one file, then fsync) through
   an ``intercept`` source node, timed until the replica holds all of it (polled: its size
   and last MiB, which the target applies last; then the whole file's hash is checked, untimed);
   baseline: the same
   writes through the same ``InterceptCapture`` with a sink that discards every op (FUSE
   passthrough, no journal). Target: ``ratios.intercept_over_passthrough`` >= 0.65. For
   context: ``disk_seq_mb_s`` (the same writes to a plain folder, no FUSE) and
   ``seq_disk_write_amplification`` (bytes source, nats-server and target wrote per byte: on
   one machine they share one disk, which two hosts would not).
2. incremental: 64 files (1 GiB / 64 MiB in all) in sync on both sides; 5 % of their 64 KiB
   blocks are rewritten (seeded choice and content, the same for every method); time until
   the replica matches, for ``watch`` and ``intercept``; baseline: ``rsync -a --no-whole-file
   --inplace`` of the same change (the rsync command alone is timed). Target: rsync time over
   ours >= 1.5.
3. lag: 4 KiB writes at random 4 KiB slots of a 64 MiB file, paced at 20 MB/s for 30 / 10 s
   through an intercept pair; each write carries its sequence number, a poller process maps
   the replica file and stamps when each write shows up (every 1 ms). Target: p99 <= 100 ms.
   ``lag_achieved_mb_s`` says what the writer reached; ``fuse_passthrough_4k_mb_s`` is the
   ceiling: one unpaced writer's 4 KiB random writes through a bare FUSE passthrough.
4. sync mode: 4 KiB ``pwrite`` + ``fsync`` on the mount, 500 / 200 times, with
   ``mode="sync", sync_policy="block"`` against plain async replication (both intercept pairs
   with a running target). Target: p99 added by sync mode <= 3 ms.

Each node runs in a process of its own (bench/repl_node.py), as the replicator service does on
each node; the lag writer and poller too (bench/repl_lag.py). Both nodes, the nats-server and
the writers share this machine's CPUs and disk, which a real pair (two hosts) would not. The
role record is written before the nodes start (the target can then start first), and every
measurement waits for the source's verify & synchronize at start to complete. Per pair, the
JSON's ``observations`` hold the alerts and replica states seen on the bus, and the CPU time
and the kernel's ``write_bytes`` of source, target and nats-server while measuring (counted
per page cache folio: with large folios, small random writes are overstated several times).
MB = 10^6 bytes. Needs FUSE (/dev/fuse, fuse3) and rsync (apt-get install rsync).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

# The parts, each a module of this folder: repl_util (units, sizes, small helpers), repl_harness
# (``Bench``: the processes, each pair's nats-server, what the bus says), repl_throughput
# (scenarios 1 and 2), repl_latency (3 and 4); repl_node and repl_lag run as processes of their
# own.
from repl_harness import LOG_LEVEL, Bench
from repl_latency import lag, sync_mode
from repl_throughput import incremental, sequential
from repl_util import MB, Sizes, unmount_leftovers

#: name -> (metric or ratio it applies to, "min" or "max", bound)
TARGETS: dict[str, tuple[str, str, float]] = {
    "intercept_over_passthrough": ("ratios.intercept_over_passthrough", "min", 0.65),
    "rsync_over_watch": ("ratios.rsync_over_watch", "min", 1.5),
    "rsync_over_intercept": ("ratios.rsync_over_intercept", "min", 1.5),
    "lag_ms_p99": ("metrics.lag_ms_p99", "max", 100.0),
    "sync_added_ms_p99": ("ratios.sync_added_ms_p99", "max", 3.0),
}

# -- report -----------------------------------------------------------------------------------


def judge(metrics: dict[str, Any], ratios: dict[str, Any]) -> dict[str, Any]:
    found = {"metrics": metrics, "ratios": ratios}
    out: dict[str, Any] = {}
    for name, (where, kind, bound) in TARGETS.items():
        section, key = where.split(".")
        value = found[section].get(key)
        if value is None:
            met = False  # not measured (error, not run) or never seen: a miss, never a pass
        else:
            met = value >= bound if kind == "min" else value <= bound
        out[name] = {"value": value, kind: bound, "met": met, "measured": value is not None}
    return out


SCENARIOS = ("seq", "incremental", "lag", "sync")

#: scenario name -> what measures it on a ``Bench``
RUNS: dict[str, Callable[[Bench], Awaitable[dict[str, Any]]]] = {
    "seq": sequential,
    "incremental": incremental,
    "lag": lag,
    "sync": sync_mode,
}


async def run_all(
    root: Path, sizes: Sizes, only: list[str], profile: Path | None, lag_rate: float
) -> dict[str, Any]:
    bench = Bench(root, sizes, profile, lag_rate)
    metrics: dict[str, Any] = {}
    ratios: dict[str, Any] = {}
    details: dict[str, Any] = {}
    errors: dict[str, str] = {}
    durations: dict[str, float] = {}
    for name in only:
        t0 = time.monotonic()
        try:
            part = await RUNS[name](bench)
        except Exception as exc:
            traceback.print_exc()
            errors[name] = f"{type(exc).__name__}: {exc}"
        else:
            metrics.update(part["metrics"])
            ratios.update(part["ratios"])
            details[name] = part["details"]
        durations[name] = round(time.monotonic() - t0, 1)
    return {
        "metrics": metrics,
        "ratios": ratios,
        "details": details,
        "errors": errors,
        "scenario_seconds": durations,
        "observations": bench.observations,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small run (under a minute)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/replication.json"))
    parser.add_argument(
        "--only", default=",".join(SCENARIOS), help=f"comma-separated, of {','.join(SCENARIOS)}"
    )
    parser.add_argument("--tmp", type=Path, default=None, help="where to put the folders")
    parser.add_argument(
        "--lag-mb-s", type=float, default=20.0, help="lag scenario write rate (diagnosis)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the folders and node logs")
    parser.add_argument(
        "--profile", type=Path, default=None, help="py-spy each node into DIR (needs py-spy)"
    )
    args = parser.parse_args()
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    if unknown := [s for s in only if s not in SCENARIOS]:
        parser.error(f"unknown scenarios: {unknown}")
    logging.basicConfig(level=LOG_LEVEL, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sizes = Sizes.of(args.quick)
    started = time.monotonic()
    load_at_start = [round(x, 2) for x in os.getloadavg()]  # other work on this machine
    root = Path(tempfile.mkdtemp(prefix="tandem-bench-repl-", dir=args.tmp)).resolve()
    try:
        found = asyncio.run(run_all(root, sizes, only, args.profile, args.lag_mb_s * MB))
    finally:
        unmount_leftovers(root)
        if args.keep:
            sys.stderr.write(f"kept {root}\n")
        else:
            shutil.rmtree(root, ignore_errors=True)
    targets = judge(found["metrics"], found["ratios"])
    result = {
        "benchmark": "replication",
        "quick": args.quick,
        "scenarios": only,
        "metrics": found["metrics"],
        "ratios": found["ratios"],
        "targets": targets,
        "errors": found["errors"],
        "details": found["details"],
        "observations": found["observations"],
        "scenario_seconds": found["scenario_seconds"],
        "runtime_s": round(time.monotonic() - started, 1),
        "setup": (
            "one host, loopback; per pair a fresh embedded nats-server (file storage, "
            "sync_interval: always); each node in its own process; MB = 10^6 bytes; "
            "measured after the source's verify & synchronize at start"
        ),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "rsync": shutil.which("rsync") is not None,
            "loadavg_at_start": load_at_start,
        },
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    summary = {k: result[k] for k in ("metrics", "ratios", "targets", "errors", "runtime_s")}
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    return 1 if found["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
