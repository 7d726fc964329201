"""The loaded scenarios of the failover benchmark (bench/failover.py), and their load.

The load (``HeavyLoad``): two busy loops (both cores of this machine saturated) and an
fsync-heavy writer on the disk nats-server writes to (256 KiB chunks into a file in the
rig's folder, an fsync after each, at most ``FSYNC_RATE`` bytes a second, the file truncated
every ``FSYNC_FILE_MAX`` bytes so it never grows past that).
Each load process stops by itself once the benchmark's process is gone.

* Loaded soak: the pair idle under that load. A ``NodeSelfFenced`` event is a false fence (an
  outage: nothing was killed), as is an agent's "fences itself" log line (the count is the
  larger of the two); an epoch change or a failover saga started is a false failover.
* Loaded RTO: under the same load, SIGKILL of the Active's *agent* only (its app is left to
  the node guard, which must kill it and hide the node), timed until the public port answers
  200 from the new Active. Each cycle records whether the killed agent's application process
  is gone (``guard_killed_app``: gone, and the guard's report says it killed it).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from failover_rig import APP, Rig, log_tail, parse_time, read_pid, wait_until
from failover_scenarios import Burners, local_stamp, rto_cycles, say, soak

FSYNC_CHUNK = 256 << 10
#: A cap on the writer, so a 30 min soak does not write a terabyte: still ~128 fsyncs/s.
FSYNC_RATE = 32 << 20
FSYNC_FILE_MAX = 64 << 20
#: A cycle's app must be gone this long after the agent's kill at the latest.
APP_GONE_WAIT_S = 10.0
#: After a loaded phase: fences recorded late (through an agent's outbox) still count.
GRACE_S = 3.0

# The fsync writer: argv[1] the file (in the rig's folder, so the rig's leftover sweep finds
# it), argv[2] the chunk size, argv[3] the file's largest size. A JSON line of what it did
# every 5 s and at the end; stops on SIGTERM or once its parent (this benchmark) is gone.
FSYNC_WRITER = """
import json, os, signal, sys, time
path, chunk, limit, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
parent = os.getppid()
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
block = os.urandom(chunk)
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
size = written = fsyncs = rotations = 0
fsync_s = fsync_max = 0.0
started = said = time.monotonic()
def report():
    print(json.dumps({"written_mib": written >> 20, "fsyncs": fsyncs, "rotations": rotations,
        "fsync_s_mean": round(fsync_s / max(fsyncs, 1), 4), "fsync_s_max": round(fsync_max, 3),
        "wall_s": round(time.monotonic() - started, 1)}), flush=True)
while not stop and os.getppid() == parent:
    if size + chunk > limit:
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        size, rotations = 0, rotations + 1
    view = memoryview(block)
    while view:
        view = view[os.write(fd, view):]
    t = time.monotonic()
    os.fsync(fd)
    took = time.monotonic() - t
    size, written, fsyncs = size + chunk, written + chunk, fsyncs + 1
    fsync_s, fsync_max = fsync_s + took, max(fsync_max, took)
    ahead = written / rate - (time.monotonic() - started)
    if ahead > 0:
        time.sleep(ahead)
    if time.monotonic() - said >= 5:
        report()
        said = time.monotonic()
report()
os.close(fd)
os.unlink(path)
"""

#: What the loaded phases count in the agents' and the orchestrator's logs.
LOG_COUNTS = {
    "lease_not_renewed": "lease not renewed",
    "fences_itself": "fences itself",
    "guard_fenced": "; fenced in ",
    "traceback": "traceback",
    "error": " error ",
    "warning": " warning ",
}


class FsyncWriter:
    def __init__(self, rig: Rig) -> None:
        folder = rig.root / "load"
        folder.mkdir(exist_ok=True)
        self.log = folder / "fsync.log"
        argv = [sys.executable, "-c", FSYNC_WRITER, str(folder / "fsync.bin")]
        argv += [str(FSYNC_CHUNK), str(FSYNC_FILE_MAX), str(FSYNC_RATE)]
        self.proc = rig.spawn(argv, self.log, **os.environ)

    def stop(self) -> dict[str, Any]:
        self.proc.terminate()
        self.proc.wait(30)
        out: dict[str, Any] = {"exit_code": self.proc.returncode}
        for line in reversed(log_tail(self.log, 5)):
            try:
                out.update(json.loads(line))
                break
            except ValueError:
                continue
        else:
            out["log"] = log_tail(self.log, 5)
        return out


class HeavyLoad:
    """Both cores busy and the fsync writer, until ``stop``."""

    def __init__(self, rig: Rig) -> None:
        self.disk = FsyncWriter(rig)
        self.cpu = Burners(rig, 2)

    def stop(self) -> dict[str, Any]:
        disk = self.disk.stop()
        return {"cpu_burners": 2, **self.cpu.stop(), "fsync_writer": disk}


def log_counts(rig: Rig, since: str) -> dict[str, Any]:
    """Per log: how many lines from ``since`` on hold each of ``LOG_COUNTS``; and the first
    lines of the warnings, errors and tracebacks."""
    logs = {"orchestrator": rig.root / "orchestrator.log"}
    logs.update({name: node.log for name, node in rig.nodes.items()})
    out: dict[str, Any] = {}
    for name, path in logs.items():
        counts = dict.fromkeys(LOG_COUNTS, 0)
        examples: list[str] = []
        inside = False  # from the first line stamped at ``since`` or later on
        for line in log_tail(path, 1_000_000):
            if not inside:
                if not (line[:2] == "20" and line[:19] >= since):
                    continue
                inside = True
            low = line.lower()
            hit = False
            for key, word in LOG_COUNTS.items():
                if word in low:
                    counts[key] += 1
                    hit = True
            if hit and len(examples) < 15 and line[:300] not in examples:
                examples.append(line[:300])
        out[name] = {"counts": counts, "examples": examples}
    return out


def _fences(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "node": e["node"],
            "epoch": e.get("epoch"),
            "occurred_at": e["occurred_at"],
            "by": e["payload"].get("by"),
            "reason": e["payload"].get("reason"),
            "late_s": e["payload"].get("late_s"),
            "actions": e["payload"].get("actions"),
        }
        for e in events
        if e["type"] == "NodeSelfFenced"
    ]


# -- 5. loaded soak ---------------------------------------------------------------------------


def loaded_soak(rig: Rig, duration: float, cursor: int) -> tuple[dict[str, Any], int]:
    since = local_stamp(time.time())
    out, events, cursor = soak(rig, duration, cursor, lambda: HeavyLoad(rig), "load")
    time.sleep(GRACE_S)
    late, cursor = rig.events_after(cursor)
    late_sagas = [
        e for e in late if e["type"] == "SagaStarted" and e["payload"].get("kind") == "failover"
    ]
    out["false_failovers"] += len(late_sagas)
    fences = _fences(events + late)
    logs = log_counts(rig, since)
    fence_lines = sum(v["counts"]["fences_itself"] for k, v in logs.items() if k in rig.nodes)
    out.update(
        false_fences=max(len(fences), fence_lines),
        fences=fences,
        fence_log_lines=fence_lines,
        unfenced=[
            {"node": e["node"], "occurred_at": e["occurred_at"], "reason": e["payload"]["reason"]}
            for e in events + late
            if e["type"] == "NodeUnfenced"
        ],
        events_after_soak=sorted({e["type"] for e in late}),
        logs=logs,
    )
    return out, cursor


# -- 6. loaded RTO ----------------------------------------------------------------------------


class AgentKill:
    """Kills only the Active's agent and watches its application process, which the node
    guard must kill."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.killed_at = self.killed_wall = 0.0
        self.app: psutil.Process | None = None
        self.gone_after: float | None = None
        self.watcher: threading.Thread | None = None

    def kill(self, node: str) -> dict[str, Any]:
        pid = read_pid(self.rig.nodes[node].app_pid_file)
        try:
            self.app = psutil.Process(pid) if pid is not None else None
        except psutil.Error:
            self.app = None
        self.gone_after = None
        self.killed_at = time.monotonic()
        self.killed_wall = time.time()
        out = self.rig.kill_node(node, app=False)
        out["app_running_at_kill"] = self.app is not None
        if self.app is not None:
            self.watcher = threading.Thread(target=self._watch, args=(self.app,), daemon=True)
            self.watcher.start()
        return out

    def _watch(self, app: psutil.Process) -> None:
        while time.monotonic() < self.killed_at + APP_GONE_WAIT_S:
            if not _alive(app):
                self.gone_after = time.monotonic() - self.killed_at
                return
            time.sleep(0.01)

    def inspect(self, node: str, cycle: dict[str, Any]) -> None:
        if self.watcher is not None:
            self.watcher.join(max(0.0, self.killed_at + APP_GONE_WAIT_S + 1 - time.monotonic()))
            self.watcher = None
        gone = self.app is not None and not _alive(self.app)
        state_dir = self.rig.nodes[node].state_dir
        wait_until(  # the guard writes its report once it has hidden and killed
            lambda: bool(_guard_reports(state_dir, self.killed_wall)),
            max(0.0, self.killed_at + APP_GONE_WAIT_S - time.monotonic()),
        )
        reports = _guard_reports(state_dir, self.killed_wall)
        said_killed = any(
            a.startswith(f"{APP}:") and "killed" in a for r in reports for a in r.get("actions", [])
        )
        cycle.update(
            app_gone=gone,
            app_gone_after_s=round(self.gone_after, 3) if self.gone_after is not None else None,
            guard_reports=reports,
            guard_killed_app=gone and said_killed,
        )
        if gone and not said_killed:
            cycle["guard_note"] = "the app is gone but no guard report says the guard killed it"
        say(
            f"  {node}'s guard killed its app: {cycle['guard_killed_app']} (app gone after "
            f"{cycle['app_gone_after_s']}s; {len(reports)} guard report(s))"
        )


def _alive(proc: psutil.Process) -> bool:
    """Running and not a zombie (``is_running`` also sees a pid reused since)."""
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _guard_reports(state_dir: Path, since_wall: float) -> list[dict[str, Any]]:
    """The node guard's reports written after ``since_wall`` (read, left for the agent)."""
    out = []
    for path in sorted((state_dir / "guard" / "reports").glob("fenced-*.json")):
        try:
            report = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        at = parse_time(report.get("fenced_at"))
        if at is None or at >= since_wall - 1:
            out.append(report)
    return out


def loaded_rto(rig: Rig, n: int, cursor: int) -> tuple[dict[str, Any], int]:
    since = local_stamp(time.time())
    first = cursor
    load = HeavyLoad(rig)
    killer = AgentKill(rig)
    try:
        out, cursor = rto_cycles(rig, n, cursor, killer.kill, killer.inspect, "loaded RTO")
    finally:
        out_load = load.stop()
    time.sleep(GRACE_S)
    events, cursor = rig.events_after(first)
    fences = _fences(events)
    # Expected: the guard of each killed agent ("the agent exited without stopping cleanly").
    unexpected = [
        f
        for f in fences
        if not (f["by"] == "guard" and "exited without stopping" in (f["reason"] or ""))
    ]
    out.update(
        load=out_load,
        fences=fences,
        unexpected_fences=unexpected,
        logs=log_counts(rig, since),
    )
    return out, cursor
