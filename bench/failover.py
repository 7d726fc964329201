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

Everything runs on this one machine (agents, apps, orchestrator, nats-server and the poller
share its CPUs), which a real pair (two hosts) would not.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import Any

import psutil

from failover_rig import (
    CLUSTER,
    Rig,
    http_status,
    log_grep,
    parse_time,
    poll_until_ok,
    wait_until,
)
from tandem.events.embedded import free_port

CYCLE_TIMEOUT_S = 60.0
# The pair must have been ready this long before a kill or a switchover.
SETTLE_S = 2.0
POLL_S = 0.02
REQUEST_TIMEOUT_S = 0.25

# name: (section.key, "max"/"min", bound)
TARGETS: dict[str, tuple[str, str, float]] = {
    "rto_s_p50": ("metrics.rto_s_p50", "max", 1.5),
    "rto_s_p99": ("metrics.rto_s_p99", "max", 3.0),
    "switchover_s_p50": ("metrics.switchover_s_p50", "max", 0.5),
    "false_failovers": ("metrics.false_failovers", "max", 0),
}

# The busy loop: one core, until its parent (this benchmark) is gone. argv[1] is the rig's
# folder, so the rig's leftover sweep would find it too.
BUSY_LOOP = """
import os, sys
parent = os.getppid()
while os.getppid() == parent:
    for _ in range(200_000):
        pass
"""

LOG_WORDS = (
    "error",
    "warning",
    "exception",
    "traceback",
    "timed out",
    "timeout",
    "fenc",
    "failover",
    "saga",
    "lost",
    "refus",
)


def say(text: str) -> None:
    sys.stderr.write(f"[failover {time.strftime('%H:%M:%S')}] {text}\n")
    sys.stderr.flush()


def p50(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def p99(values: list[float]) -> float | None:
    """The 99th percentile; with fewer than 100 samples, the max."""
    if not values:
        return None
    if len(values) < 100:
        return round(max(values), 3)
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 3)


def local_stamp(t: float) -> str:
    """A Unix time as the services' log timestamps start (local time, to the second)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def step_durations(saga: dict[str, Any]) -> dict[str, float]:
    out = {}
    for step in saga.get("steps", []):
        start, end = parse_time(step.get("started_at")), parse_time(step.get("ended_at"))
        if start is not None and end is not None:
            out[step["name"]] = round(end - start, 3)
    return out


def wait_saga_end(rig: Rig, saga_id: str, timeout: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = rig.saga(saga_id)
        if last is not None and last.get("state") != "running":
            return last
        time.sleep(0.1)
    return last


# -- 4. baseline: the demo app's own cold start -----------------------------------------------


def app_cold_starts(rig: Rig, n: int) -> dict[str, Any]:
    samples: list[float] = []
    failures = []
    for i in range(n):
        data = rig.root / "baseline" / f"data-{i}"
        data.mkdir(parents=True)
        port = free_port()
        argv = [sys.executable, "-m", "tandem.agent.demoapp", "--data", str(data)]
        argv += ["--port", str(port)]
        t0 = time.monotonic()
        proc = rig.spawn(argv, rig.root / "baseline" / "app.log", **os.environ)
        ok = poll_until_ok(port, t0 + CYCLE_TIMEOUT_S, POLL_S, REQUEST_TIMEOUT_S)
        took = time.monotonic() - t0
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if ok:
            samples.append(round(took, 3))
        else:
            failures.append(f"run {i}: no 200 within {CYCLE_TIMEOUT_S:g}s")
        say(f"app cold start {i + 1}/{n}: {took:.3f}s{'' if ok else ' (FAILED)'}")
    return {"samples_s": samples, "failures": failures}


# -- 1. RTO -------------------------------------------------------------------------------------


def rto_cycle(rig: Rig, i: int, cursor: int) -> tuple[dict[str, Any], int]:
    cycle: dict[str, Any] = {"cycle": i}
    ok, why = rig.wait_ready(CYCLE_TIMEOUT_S, SETTLE_S)
    if not ok:
        cycle.update(ok=False, error=f"pair not ready within {CYCLE_TIMEOUT_S:g}s: {why}")
        return cycle, cursor
    view = rig.view() or {}
    active = view.get("active")
    cycle.update(killed=active, epoch_before=view.get("epoch"))
    passive = [n for n in view.get("nodes", []) if n["name"] != active]
    cycle["passive_before"] = [
        {k: n.get(k) for k in ("name", "alive", "role", "replication", "lag_bytes")}
        for n in passive
    ]
    _, cursor = rig.events_after(cursor)  # start the window at the kill

    kill_wall = time.time()
    t0 = time.monotonic()
    cycle.update(rig.kill_node(active or ""))
    served = poll_until_ok(rig.public_port, t0 + CYCLE_TIMEOUT_S, POLL_S, REQUEST_TIMEOUT_S)
    rto = time.monotonic() - t0
    served_wall = kill_wall + rto
    cycle.update(ok=served, rto_s=round(rto, 3) if served else None)
    if not served:
        cycle["error"] = f"public port not 200 within {CYCLE_TIMEOUT_S:g}s of the kill"
    rig.reap(active or "")

    # Where the time went: the orchestrator's events and the failover saga.
    events, cursor = rig.events_after(cursor)
    started = [
        e for e in events if e["type"] == "SagaStarted" and e["payload"].get("kind") == "failover"
    ]
    lost = [
        e for e in events if e["type"] == "HeartbeatLost" and e["payload"].get("peer") == active
    ]
    if lost:
        lost_at = parse_time(lost[0]["occurred_at"]) or kill_wall
        cycle["peer_heartbeat_lost_after_s"] = round(lost_at - kill_wall, 3)
    if started:
        saga_id = started[0]["payload"]["saga_id"]
        cycle["saga_id"] = saga_id
        cycle["saga_reason"] = started[0]["payload"].get("reason")
        began = parse_time(started[0]["occurred_at"])
        assert began is not None
        cycle["detect_s"] = round(began - kill_wall, 3)
        saga = wait_saga_end(rig, saga_id, 30) or {}
        cycle["saga_state"] = saga.get("state")
        ended = parse_time(saga.get("ended_at"))
        if ended is not None:
            s_start = parse_time(saga.get("started_at")) or began
            cycle["saga_s"] = round(ended - s_start, 3)
            if served:
                # Negative: the app answered before the saga recorded its end.
                cycle["served_after_saga_end_s"] = round(served_wall - ended, 3)
        cycle["steps_s"] = step_durations(saga)
        if saga.get("state") == "failed":
            cycle["saga_failure"] = saga.get("reason")
    else:
        cycle["detect_s"] = None
        cycle["note"] = "no failover SagaStarted event seen"
    cycle["events"] = sorted({e["type"] for e in events})
    view = rig.view() or {}
    cycle.update(active_after=view.get("active"), epoch_after=view.get("epoch"))

    # The killed node's agent comes back (Passive) before the next cycle.
    rig.start_agent(active or "")
    cycle["window"] = [local_stamp(kill_wall - 1), local_stamp(served_wall + 2)]
    return cycle, cursor


def rto_cycles(rig: Rig, n: int, cursor: int) -> tuple[dict[str, Any], int]:
    cycles = []
    failed_in_row = 0
    for i in range(n):
        cycle, cursor = rto_cycle(rig, i, cursor)
        cycles.append(cycle)
        if cycle.get("ok"):
            failed_in_row = 0
            say(
                f"RTO cycle {i + 1}/{n}: {cycle['rto_s']:.3f}s (killed {cycle['killed']}; "
                f"detect {cycle.get('detect_s')}s, saga {cycle.get('saga_s')}s)"
            )
        else:
            failed_in_row += 1
            say(f"RTO cycle {i + 1}/{n}: FAILED: {cycle.get('error')}")
            if failed_in_row >= 2:
                say("two cycles failed in a row: giving up the RTO scenario")
                break
    return {"cycles": cycles, "planned": n}, cursor


# -- 2. switchover ------------------------------------------------------------------------------


def one_switchover(rig: Rig, i: int) -> dict[str, Any]:
    run: dict[str, Any] = {"run": i}
    ok, why = rig.wait_ready(CYCLE_TIMEOUT_S, SETTLE_S)
    if not ok:
        run.update(ok=False, error=f"pair not ready within {CYCLE_TIMEOUT_S:g}s: {why}")
        return run
    run["from"] = (rig.view() or {}).get("active")
    post_wall = time.time()
    t0 = time.monotonic()
    answer = rig.switchover()
    if answer.status_code != 202:
        run.update(ok=False, error=f"POST answered {answer.status_code}: {answer.text[:300]}")
        return run
    saga_id = answer.json()["saga_id"]
    run["saga_id"] = saga_id
    deadline = t0 + CYCLE_TIMEOUT_S
    saga: dict[str, Any] | None = None
    saga_seen = 0.0
    first_fail: float | None = None
    back_ok: float | None = None
    next_saga_poll = t0
    while time.monotonic() < deadline:
        now = time.monotonic()
        status = http_status(rig.public_port, timeout=REQUEST_TIMEOUT_S)
        if status != 200 and first_fail is None:
            first_fail = now
        elif status == 200 and first_fail is not None and back_ok is None:
            back_ok = now
        if saga is None and now >= next_saga_poll:
            got = rig.saga(saga_id)
            if got is not None and got.get("state") != "running":
                saga, saga_seen = got, time.monotonic()
            next_saga_poll = now + 0.1
        if saga is not None and (back_ok is not None or time.monotonic() > saga_seen + 10):
            break
        time.sleep(max(0.0, POLL_S - (time.monotonic() - now)))
    if saga is None:
        run.update(ok=False, error=f"saga still running after {CYCLE_TIMEOUT_S:g}s")
        return run
    run["state"] = saga["state"]
    run["to"] = saga.get("to_node")
    ended = parse_time(saga.get("ended_at"))
    steps = step_durations(saga)
    run["steps_s"] = steps
    if saga["state"] != "completed" or ended is None:
        run.update(ok=False, error=f"saga {saga['state']}: {saga.get('reason')}")
        return run
    total = ended - post_wall
    app = steps.get("stop applications", 0.0) + steps.get("start applications", 0.0)
    run.update(
        ok=True,
        total_s=round(total, 3),
        app_s=round(app, 3),
        switchover_s=round(total - app, 3),
        observed_s=round(saga_seen - t0, 3),
    )
    if first_fail is not None and back_ok is not None:
        run["public_unavailable_s"] = round(back_ok - first_fail, 3)
    elif first_fail is not None:
        run["public_unavailable_s"] = None
        run["note"] = "the public port had not answered 200 again 10 s after the saga ended"
    return run


def switchovers(rig: Rig, n: int) -> dict[str, Any]:
    runs = []
    for i in range(n):
        run = one_switchover(rig, i)
        runs.append(run)
        if run.get("ok"):
            say(
                f"switchover {i + 1}/{n}: {run['from']} -> {run['to']}: total "
                f"{run['total_s']:.3f}s, without app stop/start {run['switchover_s']:.3f}s"
            )
        else:
            say(f"switchover {i + 1}/{n}: FAILED: {run.get('error')}")
    return {"runs": runs, "planned": n}


# -- 3. soak ------------------------------------------------------------------------------------


def soak(rig: Rig, duration: float, cursor: int) -> tuple[dict[str, Any], int]:
    out: dict[str, Any] = {"duration_s": duration}
    ok, why = rig.wait_ready(CYCLE_TIMEOUT_S, SETTLE_S)
    if not ok:
        out["note"] = f"pair not ready at the soak's start: {why}"
    _, cursor = rig.events_after(cursor)
    view = rig.view() or {}
    epoch0, active0 = view.get("epoch"), view.get("active")
    out.update(epoch_at_start=epoch0, active_at_start=active0)
    busy = rig.spawn(
        [sys.executable, "-c", BUSY_LOOP, str(rig.root)], rig.root / "busy.log", **os.environ
    )
    busy_started = time.monotonic()
    epoch_changes: list[dict[str, Any]] = []
    not_alive: dict[str, int] = {}
    public_failures = 0
    last_epoch = epoch0
    unreadable = 0
    try:
        end = time.monotonic() + duration
        while time.monotonic() < end:
            v = rig.view()
            if v is None:
                unreadable += 1
            else:
                if v.get("epoch") != last_epoch:
                    epoch_changes.append(
                        {
                            "at_s": round(time.monotonic() - busy_started, 1),
                            "epoch": v.get("epoch"),
                            "active": v.get("active"),
                        }
                    )
                    last_epoch = v.get("epoch")
                for n in v.get("nodes", []):
                    if not n.get("alive"):
                        not_alive[n["name"]] = not_alive.get(n["name"], 0) + 1
            if http_status(rig.public_port, timeout=1) != 200:
                public_failures += 1
            time.sleep(0.5)
    finally:
        try:
            cpu = sum(psutil.Process(busy.pid).cpu_times()[:2])
        except psutil.Error:
            cpu = None
        wall = time.monotonic() - busy_started
        busy.terminate()
        busy.wait(10)
    out["busy_loop"] = {
        "cpu_s": round(cpu, 1) if cpu is not None else None,
        "wall_s": round(wall, 1),
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
    }
    events, cursor = rig.events_after(cursor)
    failover_sagas = [
        e for e in events if e["type"] == "SagaStarted" and e["payload"].get("kind") == "failover"
    ]
    counts: dict[str, int] = {}
    for e in events:
        counts[e["type"]] = counts.get(e["type"], 0) + 1
    view = rig.view() or {}
    epoch_diff = (view.get("epoch") or 0) - (epoch0 or 0)
    out.update(
        epoch_at_end=view.get("epoch"),
        active_at_end=view.get("active"),
        epoch_changes=epoch_changes,
        failover_sagas=[
            {"saga_id": e["payload"]["saga_id"], "reason": e["payload"].get("reason")}
            for e in failover_sagas
        ],
        false_failovers=max(epoch_diff, len(epoch_changes), len(failover_sagas)),
        event_counts=counts,
        heartbeat_lost=[
            {"node": e["node"], "peer": e["payload"].get("peer"), "reason": e["payload"]["reason"]}
            for e in events
            if e["type"] == "HeartbeatLost"
        ][:20],
        view_polls_not_alive=not_alive,
        view_unreadable=unreadable,
        public_health_failures=public_failures,
    )
    return out, cursor


# -- report -------------------------------------------------------------------------------------


def judge(metrics: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, (where, kind, bound) in TARGETS.items():
        value = metrics.get(where.split(".", 1)[1])
        if value is None:
            met = False  # not measured: a miss, never a pass
        else:
            met = value >= bound if kind == "min" else value <= bound
        out[name] = {"value": value, kind: bound, "met": met, "measured": value is not None}
    return out


def summarize(found: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    metrics: dict[str, Any] = {}
    ratios: dict[str, Any] = {}
    notes: dict[str, str] = {}
    rto = found.get("rto")
    if rto is not None:
        cycles = rto["cycles"]
        # A failed cycle counts at the give-up time: a lower bound of its RTO.
        values = [c["rto_s"] if c.get("ok") else CYCLE_TIMEOUT_S for c in cycles]
        metrics["rto_s_p50"] = p50(values)
        metrics["rto_s_p99"] = p99(values)
        metrics["rto_s_max"] = round(max(values), 3) if values else None
        metrics["rto_cycles"] = len(cycles)
        metrics["rto_failed_cycles"] = sum(1 for c in cycles if not c.get("ok"))
        metrics["failover_detect_s_p50"] = p50(
            [c["detect_s"] for c in cycles if c.get("detect_s") is not None]
        )
        metrics["failover_saga_s_p50"] = p50(
            [c["saga_s"] for c in cycles if c.get("saga_s") is not None]
        )
        if len(values) < 100:
            notes["rto_s_p99"] = f"the max of {len(values)} cycles (fewer than 100)"
        if metrics["rto_failed_cycles"]:
            notes["rto_s"] = f"failed cycles count as {CYCLE_TIMEOUT_S:g} s (a lower bound)"
    sw = found.get("switchover")
    if sw is not None:
        runs = [r for r in sw["runs"] if r.get("ok")]
        metrics["switchover_s_p50"] = p50([r["switchover_s"] for r in runs])
        metrics["switchover_total_s_p50"] = p50([r["total_s"] for r in runs])
        metrics["switchover_app_s_p50"] = p50([r["app_s"] for r in runs])
        metrics["switchover_public_unavailable_s_p50"] = p50(
            [r["public_unavailable_s"] for r in runs if r.get("public_unavailable_s") is not None]
        )
        metrics["switchovers"] = len(sw["runs"])
        metrics["switchover_failed"] = len(sw["runs"]) - len(runs)
        notes["switchover_s"] = (
            "POST to the saga's ended_at, minus the durations of the steps 'stop applications' "
            "and 'start applications' (the latter includes the agent's fixed 1 s settle of a "
            "started process)"
        )
    so = found.get("soak")
    if so is not None:
        metrics["false_failovers"] = so["false_failovers"]
        metrics["soak_s"] = so["duration_s"]
        metrics["soak_heartbeat_lost"] = so["event_counts"].get("HeartbeatLost", 0)
    base = found.get("baseline")
    if base is not None:
        metrics["app_cold_start_s_p50"] = p50(base["samples_s"])
    if metrics.get("rto_s_p50") and metrics.get("app_cold_start_s_p50"):
        ratios["rto_over_app_start"] = round(
            metrics["rto_s_p50"] / metrics["app_cold_start_s_p50"], 2
        )
    return metrics, ratios, notes


def breakdown(found: dict[str, Any]) -> dict[str, Any]:
    """Medians of where the time of a failover and of a switchover went (saga steps)."""
    out: dict[str, Any] = {}
    for key, items in (
        ("failover", (found.get("rto") or {}).get("cycles", [])),
        ("switchover", (found.get("switchover") or {}).get("runs", [])),
    ):
        steps: dict[str, list[float]] = {}
        for item in items:
            for name, took in (item.get("steps_s") or {}).items():
                steps.setdefault(name, []).append(took)
        out[f"{key}_steps_s_p50"] = {name: p50(v) for name, v in steps.items()}
    cycles = (found.get("rto") or {}).get("cycles", [])
    out["failover_detect_s"] = [c.get("detect_s") for c in cycles]
    out["failover_served_after_saga_end_s"] = [c.get("served_after_saga_end_s") for c in cycles]
    return out


def attach_logs(rig: Rig, found: dict[str, Any]) -> None:
    """For a failed or slow RTO cycle (over 1.5 x the median), the logs' telling lines."""
    rto = found.get("rto")
    if not rto:
        return
    ok = [c["rto_s"] for c in rto["cycles"] if c.get("ok")]
    median = statistics.median(ok) if ok else 0.0
    for c in rto["cycles"]:
        slow = not c.get("ok") or (median and c["rto_s"] > 1.5 * median)
        if not slow or "window" not in c:
            continue
        since = c["window"][0]
        logs = {"orchestrator": log_grep(rig.root / "orchestrator.log", LOG_WORDS, since)}
        for name, node in rig.nodes.items():
            logs[name] = log_grep(node.log, LOG_WORDS, since)
        c["logs"] = logs


def write_table(result: dict[str, Any]) -> None:
    rows = [("metric", "value", "target", "met")]
    targets = result["targets"]
    for key, value in result["metrics"].items():
        t = targets.get(key)
        bound = (
            "" if t is None else ("<= " if "max" in t else ">= ") + str(t.get("max", t.get("min")))
        )
        met = "" if t is None else ("yes" if t["met"] else "NO")
        rows.append((key, "-" if value is None else str(value), bound, met))
    for key, value in result["ratios"].items():
        rows.append((key, str(value), "", ""))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    sys.stdout.write("\n".join(lines) + "\n")
    for key, text in result["errors"].items():
        sys.stdout.write(f"error in {key}: {text}\n")


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally that ends every process


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small run (a minute or two)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/failover.json"))
    parser.add_argument("--keep", action="store_true", help="keep the folder and the logs")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _terminate)
    n, soak_s = (3, 60.0) if args.quick else (10, 600.0)
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
            found["soak"], cursor = soak(rig, soak_s, cursor)
            say(f"soak: {found['soak']['false_failovers']} false failover(s)")

        phase("baseline", baseline)
        phase("setup", setup)
        if "setup" not in errors:
            phase("rto", rto)
            phase("switchover", switch)
            phase("soak", idle)
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
        "details": {k: found[k] for k in ("rto", "switchover", "soak", "baseline") if k in found},
        "cleanup_forced": forced,
        "phase_seconds": durations,
        "runtime_s": round(time.monotonic() - started, 1),
        "setup": (
            f"one host, loopback; cluster {CLUSTER!r}, nodes primary/secondary, each with "
            "replication (watch) of its data folder, the demo app, an http check (0.5 s) and "
            "the loopback public port; default heartbeat (0.25 s), lease (ttl 1.5 s) and "
            "failover (1.5 s) timings; one orchestrator with default settings; one embedded "
            "nats-server (file storage, sync_interval: always); public /health polled every "
            f"{POLL_S * 1000:g} ms with a {REQUEST_TIMEOUT_S:g} s timeout per request; "
            f"the pair ready for {SETTLE_S:g} s in a row before each kill or switchover"
        ),
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
