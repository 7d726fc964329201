"""The scenarios of the failover benchmark (bench/failover.py) on an idle pair: the demo app's
cold start (the baseline), RTO cycles, managed switchovers and the soak. Each returns the
details that go into the result file; the loaded variants are in bench/failover_load.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol

import psutil

from failover_rig import Rig, http_status, parse_time, poll_until_ok
from tandem.events.embedded import free_port

CYCLE_TIMEOUT_S = 60.0
# The pair must have been ready this long before a kill or a switchover.
SETTLE_S = 2.0
POLL_S = 0.02
REQUEST_TIMEOUT_S = 0.25

# The busy loop: one core, until its parent (this benchmark) is gone. argv[1] is the rig's
# folder, so the rig's leftover sweep would find it too.
BUSY_LOOP = """
import os, sys
parent = os.getppid()
while os.getppid() == parent:
    for _ in range(200_000):
        pass
"""


#: Kills the named Active for an RTO cycle; returns what it killed (merged into the cycle).
Kill = Callable[[str], dict[str, Any]]
#: Looks at the killed node before its agent is restarted; adds what it found to the cycle.
Inspect = Callable[[str, dict[str, Any]], None]


class Load(Protocol):
    def stop(self) -> dict[str, Any]:
        """End the load; what it did (for the report)."""
        ...


class Burners:
    """``n`` busy loops (one core each), until ``stop`` or until this benchmark is gone."""

    def __init__(self, rig: Rig, n: int = 1) -> None:
        argv = [sys.executable, "-c", BUSY_LOOP, str(rig.root)]
        self.procs = [rig.spawn(argv, rig.root / "busy.log", **os.environ) for _ in range(n)]
        self.started = time.monotonic()

    def stop(self) -> dict[str, Any]:
        cpu: float | None = 0.0
        for proc in self.procs:
            try:
                cpu = None if cpu is None else cpu + sum(psutil.Process(proc.pid).cpu_times()[:2])
            except psutil.Error:
                cpu = None
        wall = time.monotonic() - self.started
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(10)
        return {
            "cpu_s": round(cpu, 1) if cpu is not None else None,
            "wall_s": round(wall, 1),
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        }


def say(text: str) -> None:
    sys.stderr.write(f"[failover {time.strftime('%H:%M:%S')}] {text}\n")
    sys.stderr.flush()


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


def rto_cycle(
    rig: Rig, i: int, cursor: int, kill: Kill | None = None, inspect: Inspect | None = None
) -> tuple[dict[str, Any], int]:
    """One kill of the Active (by default its agent and its app: ``Rig.kill_node``) and the
    time until the public port answers 200 again; ``inspect`` runs before the killed node's
    agent is restarted."""
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
    cycle.update((kill or rig.kill_node)(active or ""))
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

    if inspect is not None:
        inspect(active or "", cycle)
    # The killed node's agent comes back (Passive) before the next cycle.
    rig.start_agent(active or "")
    cycle["window"] = [local_stamp(kill_wall - 1), local_stamp(served_wall + 2)]
    return cycle, cursor


def rto_cycles(
    rig: Rig,
    n: int,
    cursor: int,
    kill: Kill | None = None,
    inspect: Inspect | None = None,
    label: str = "RTO",
) -> tuple[dict[str, Any], int]:
    cycles = []
    failed_in_row = 0
    for i in range(n):
        cycle, cursor = rto_cycle(rig, i, cursor, kill, inspect)
        cycles.append(cycle)
        if cycle.get("ok"):
            failed_in_row = 0
            say(
                f"{label} cycle {i + 1}/{n}: {cycle['rto_s']:.3f}s (killed {cycle['killed']}; "
                f"detect {cycle.get('detect_s')}s, saga {cycle.get('saga_s')}s)"
            )
        else:
            failed_in_row += 1
            say(f"{label} cycle {i + 1}/{n}: FAILED: {cycle.get('error')}")
            if failed_in_row >= 2:
                say(f"two cycles failed in a row: giving up the {label} scenario")
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


def soak(
    rig: Rig,
    duration: float,
    cursor: int,
    load: Callable[[], Load] | None = None,
    load_key: str = "busy_loop",
) -> tuple[dict[str, Any], list[dict[str, Any]], int]:
    """The pair idle for ``duration`` s under ``load`` (by default one busy core); what
    changed, and the cluster's events of the soak."""
    out: dict[str, Any] = {"duration_s": duration}
    ok, why = rig.wait_ready(CYCLE_TIMEOUT_S, SETTLE_S)
    if not ok:
        out["note"] = f"pair not ready at the soak's start: {why}"
    _, cursor = rig.events_after(cursor)
    view = rig.view() or {}
    epoch0, active0 = view.get("epoch"), view.get("active")
    out.update(epoch_at_start=epoch0, active_at_start=active0)
    running = load() if load is not None else Burners(rig)
    load_started = time.monotonic()
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
                            "at_s": round(time.monotonic() - load_started, 1),
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
        out[load_key] = running.stop()
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
    return out, events, cursor
