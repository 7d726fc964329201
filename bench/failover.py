"""Failover benchmark: a pair of node agents (``primary``/``secondary``, one cluster) protecting
the demo application on loopback, replicating its data folder (``watch``), with an http check
on it, driven by one orchestrator; all real processes on one embedded nats-server (file
storage, ``sync_interval: always``). The nodes run with the DEFAULT heartbeat, lease and
failover timings (no ``[heartbeat]``, ``[lease]``, ``[failover]`` table): the defaults are what
is measured.

    python bench/failover.py [--quick] [--out bench/results/failover.json] [--keep]

Scenarios (full / ``--quick``):

1. RTO, 10 / 3 cycles: wait until the pair is ready (the Active serves through the public
   port, its check ok; the Passive alive, role passive, not out of sync; all of it for 2 s in a
   row, as seen through the orchestrator's API), SIGKILL the Active's
   agent and its demo app, time until ``GET http://127.0.0.1:PUBLIC/health`` answers 200
   (polled every 20 ms, 0.25 s per request). The killed node's agent is then restarted (it
   comes back Passive). A cycle gives up after 60 s (counted at 60 s, a lower bound).
   Targets: ``rto_s_p50`` <= 1.5 s, ``rto_s_p99`` <= 3 s (with fewer than 100 cycles, p99 is
   the max).
2. Switchover, 10 / 3 managed switchovers through ``POST /api/v1/clusters/{c}/switchover``,
   each from the POST to the saga's ``ended_at``; ``switchover_s`` excludes the application's
   own stop and start (the durations of the saga steps "stop applications" and "start
   applications"). Target: ``switchover_s_p50`` <= 0.5 s.
3. Soak, 600 / 60 s: the pair idle while a separate process keeps one core busy; any change
   of the cluster's epoch or a failover saga started is a false failover. Target:
   ``false_failovers`` == 0.
4. Baseline (same run): the demo app's own cold start (spawn, first 200 on /health), 10 / 3
   times; ``ratios.rto_over_app_start``.
5. Loaded soak, 1800 / 180 s: the pair idle while both cores are kept busy (two busy loops)
   and an fsync writer (1 MiB writes, an fsync after each) works on nats-server's disk. A
   ``NodeSelfFenced`` event (or an agent's "fences itself" log line) is a false fence, an
   outage: nothing was killed. Targets: ``false_fences`` == 0, ``loaded_false_failovers`` ==
   0 (epoch change or failover saga, as in 3).
6. Loaded RTO, 10 / 3 cycles under the same load: as 1, but SIGKILL of the Active's agent
   only; its node guard must kill the app and hide the node (``guard_killed_app`` per
   cycle). Target: ``loaded_rto_s_p99`` <= 3 s; beside it the idle RTO of the same run
   (``idle_rto_s_p50``, ``ratios.loaded_rto_over_idle_rto``). The load is in
   bench/failover_load.py.

``metrics.split_windows`` (probes answered by both nodes) is measured by
tests/system/test_fencing_netns.py in network namespaces, not here (``notes.split_windows``).

Everything runs on this one machine (agents, apps, orchestrator, nats-server and the poller
share its CPUs), which a real pair (two hosts) would not.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import sys
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import Any

from failover_load import loaded_rto, loaded_soak
from failover_report import (
    attach_logs,
    breakdown,
    default_timings,
    judge,
    summarize,
    write_table,
)
from failover_rig import CLUSTER, Rig, wait_until
from failover_scenarios import (
    CYCLE_TIMEOUT_S,
    POLL_S,
    REQUEST_TIMEOUT_S,
    SETTLE_S,
    app_cold_starts,
    rto_cycles,
    say,
    soak,
    switchovers,
)


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally that ends every process


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small run (about ten minutes)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/failover.json"))
    parser.add_argument("--keep", action="store_true", help="keep the folder and the logs")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _terminate)
    n, soak_s, loaded_soak_s = (3, 60.0, 180.0) if args.quick else (10, 600.0, 1800.0)
    timings = default_timings()
    started = time.monotonic()
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    found: dict[str, Any] = {}
    errors: dict[str, str] = {}
    durations: dict[str, float] = {}
    forced: list[str] = []
    rig = Rig(keep=args.keep)
    try:

        def phase(name: str, work: Any) -> None:
            t0 = time.monotonic()
            try:
                work()
            except Exception as exc:
                traceback.print_exc()
                errors[name] = f"{type(exc).__name__}: {exc}"
            durations[name] = round(time.monotonic() - t0, 1)

        cursor = 0

        def baseline() -> None:
            found["baseline"] = app_cold_starts(rig, n)

        def setup() -> None:
            say(f"starting nats-server, two agents and the orchestrator in {rig.root}")
            rig.start()
            if not wait_until(rig.leader, CYCLE_TIMEOUT_S, 0.2):
                raise RuntimeError("the orchestrator did not lead within 60 s")
            ok, why = rig.wait_ready(90)
            if not ok:
                raise RuntimeError(f"the pair was not ready within 90 s: {why}")

        def rto() -> None:
            nonlocal cursor
            found["rto"], cursor = rto_cycles(rig, n, cursor)

        def switch() -> None:
            found["switchover"] = switchovers(rig, n)

        def idle() -> None:
            nonlocal cursor
            say(f"soak: {soak_s:g}s idle with one core busy")
            found["soak"], _, cursor = soak(rig, soak_s, cursor)
            say(f"soak: {found['soak']['false_failovers']} false failover(s)")

        def loaded_idle() -> None:
            nonlocal cursor
            say(f"loaded soak: {loaded_soak_s:g}s idle, both cores busy and an fsync writer")
            found["loaded_soak"], cursor = loaded_soak(rig, loaded_soak_s, cursor)
            got = found["loaded_soak"]
            reasons = "; ".join(f"{f['node']}: {f['reason']}" for f in got["fences"])
            say(
                f"loaded soak: {got['false_fences']} false fence(s), {got['false_failovers']} "
                f"false failover(s){': ' + reasons if reasons else ''}"
            )

        def loaded_kills() -> None:
            nonlocal cursor
            found["loaded_rto"], cursor = loaded_rto(rig, n, cursor)

        phase("baseline", baseline)
        phase("setup", setup)
        if "setup" not in errors:
            phase("rto", rto)
            phase("switchover", switch)
            phase("soak", idle)
            phase("loaded_soak", loaded_idle)
            phase("loaded_rto", loaded_kills)
        attach_logs(rig, found)
    finally:
        forced = rig.close()
        if args.keep:
            sys.stderr.write(f"kept {rig.root}\n")
    metrics, ratios, notes = summarize(found)
    result = {
        "benchmark": "failover",
        "quick": args.quick,
        "metrics": metrics,
        "ratios": ratios,
        "targets": judge(metrics),
        "notes": notes,
        "errors": errors,
        "details": {
            k: found[k]
            for k in ("rto", "switchover", "soak", "baseline", "loaded_soak", "loaded_rto")
            if k in found
        },
        "cleanup_forced": forced,
        "phase_seconds": durations,
        "runtime_s": round(time.monotonic() - started, 1),
        "setup": (
            f"one host, loopback; cluster {CLUSTER!r}, nodes primary/secondary, each with "
            "replication (watch) of its data folder, the demo app, an http check (0.5 s) and "
            "the loopback public port; default heartbeat (every "
            f"{timings['heartbeat_interval_s']:g} s), lease (ttl {timings['lease_ttl_s']:g} s, "
            f"renewed every {timings['lease_renew_every_s']:g} s, fence margin "
            f"{timings['lease_fence_margin_s']:g} s) and failover "
            f"({timings['failover_timeout_s']:g} s) timings and the node guard; "
            "one orchestrator with default settings; one embedded "
            "nats-server (file storage, sync_interval: always); public /health polled every "
            f"{POLL_S * 1000:g} ms with a {REQUEST_TIMEOUT_S:g} s timeout per request; "
            f"the pair ready for {SETTLE_S:g} s in a row before each kill or switchover"
        ),
        "timings": timings,
        "breakdown": breakdown(found),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "loadavg_at_start": load_at_start,
        },
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    write_table(result)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
