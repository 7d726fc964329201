"""One chaos run: the real topology, the recorders, and scenarios (a few faults from the
nemesis, then every checker) run one after another on it. Used by the tests in this folder and
by ``bench/chaos.py``.

    run = ChaosRun().start()
    faults = [Fault("switchover"), Fault("kill-stream-leader", at_s=1)]
    result = run.scenario("leader-kill-1", faults)
    run.close()

``result["violations"]`` lists what the checkers found in that scenario (see
``chaos_checkers``); the figures of each fault and check are in the rest of the dict.
"""

from __future__ import annotations

import http.client
import itertools
import json
import logging
import statistics
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from chaos_checkers import (
    Violation,
    check_crashes,
    check_events,
    check_one_active,
    check_records,
    check_sagas,
    check_split,
    failover_windows,
    saga_outcomes,
    split_windows,
    stamp,
)
from chaos_nemesis import Fault, Nemesis
from chaos_observe import BusWatch, Sampler, Seen, Workload, Write
from chaos_topology import CLUSTER, Topology

log = logging.getLogger(__name__)
logging.getLogger("httpx").setLevel(logging.WARNING)
# The watcher's own reconnects while the nemesis kills servers: not findings.
logging.getLogger("nats.aio.client").setLevel(logging.CRITICAL)


class ChaosRun:
    def __init__(self, topo: Topology | None = None) -> None:
        self.topo = topo or Topology()
        self.watch: BusWatch | None = None
        self.workload: Workload | None = None
        self.sampler: Sampler | None = None
        self.nemesis = Nemesis(self.topo)
        self.results: list[dict[str, Any]] = []
        self.faults: list[Fault] = []
        self.reported_records: set[str] = set()
        self.lag_records: set[str] = set()
        self.reported_events: set[str] = set()
        self.stored: list[Seen] = []
        self.started = time.time()

    def start(self, ready_timeout: float = 120) -> ChaosRun:
        topo = self.topo
        topo.start_nats()
        self.watch = BusWatch(topo.bus_settings(), CLUSTER).start()
        topo.watch = self.watch  # type: ignore[attr-defined]  # the nemesis finds the leader
        topo.add_agents()
        topo.add_orchestrators()
        for proc in topo.procs():
            proc.start()
        ok, why = topo.wait_ready(ready_timeout, settle=1.0, tick=topo.supervise)
        if not ok:
            raise RuntimeError(f"the chaos topology did not get ready: {why}")
        self.workload = Workload(topo.public_port, host=topo.public_host).start()
        probe = getattr(topo, "serving", None)
        self.sampler = Sampler(
            topo.app_ports, topo.public_port, public_host=topo.public_host, probe=probe
        ).start()
        return self

    # -- one scenario --------------------------------------------------------------------------

    def scenario(
        self,
        name: str,
        faults: list[Fault],
        ready_timeout: float = 90,
        saga_timeout: float = 90,
        during: Callable[[ChaosRun], list[Fault]] | None = None,
    ) -> dict[str, Any]:
        """Apply ``faults`` (and what ``during`` applies: see ``mid_saga``), heal them, wait for
        a serving pair and the sagas' ends, then run every checker."""
        assert self.watch is not None and self.workload is not None and self.sampler is not None
        topo = self.topo
        t0 = time.time()
        offsets = {n: _size(p) for n, p in topo.logs().items()}
        crashes_before = len(topo.crashes)
        log.info("scenario %s: %s", name, [f"{f.kind}:{f.target}@{f.at_s}" for f in faults])
        self.nemesis.sagas = []
        self.nemesis.run(faults, tick=topo.supervise)
        if during is not None:
            faults = [*faults, *during(self)]
        self.faults += faults
        ready, why = topo.wait_ready(ready_timeout, settle=1.0, tick=topo.supervise)
        sagas_done = self._wait_sagas(t0, saga_timeout)
        t_check = time.time()
        violations: list[Violation] = []
        if not ready:
            violations.append(
                Violation(
                    "one_active",
                    f"not back to a serving pair within {ready_timeout}s of the last fault: {why}",
                )
            )
        violations += check_split(self.sampler.samples, t0)
        # (c) first: it reads the stream (convergence: publishes still being retried count).
        violations += self._check_events(t_check)
        new_sagas = {
            s for s, o in saga_outcomes(self.stored).items() if (stamp(o["started"]) or 0) >= t0 - 1
        } | set(self.nemesis.sagas)
        violations += check_sagas(self.stored, new_sagas)
        record_v, lost, lag = self._check_records(t_check)
        violations += record_v
        serving = {n: s for n, s in self.sampler.samples[-1].serving.items()}
        violations += check_one_active(self.watch.role_record(), topo.view(), serving)
        topo.supervise()
        logs = {n: _read_from(p, offsets.get(n, 0)) for n, p in topo.logs().items()}
        violations += check_crashes(topo.crashes[crashes_before:], logs)
        outcomes = saga_outcomes(self.stored)
        for f in faults:
            if f.kind == "fill-disk":
                self._disk_figures(f)
            elif f.kind == "slow-disk":
                self._slow_figures(f)
        result = {
            "name": name,
            "started": t0,
            "checked": t_check,
            "faults": [f.as_dict() for f in faults],
            "ready": ready,
            "not_ready_because": why,
            "sagas": {s: outcomes.get(s, {"state": "unknown"}) for s in sorted(new_sagas)},
            "sagas_ended_in_time": sagas_done,
            "figures": {
                "acked_records": len(self.workload.acked()),
                "lost_acked_records": len(lost),
                "async_lag_records": len(lag),
                "events_seen": len(self.watch.seen),
                "events_stored": len(self.stored),
                "split_windows": len(split_windows(self.sampler.samples, t0)),
                "crashes": sum(1 for v in violations if v.checker == "crashes"),
                "public_outage_s": self._outage(t0, t_check),
            },
            "violations": [v.as_dict() for v in violations],
        }
        for v in violations:
            log.warning("scenario %s: %s", name, v)
        self.results.append(result)
        return result

    def _disk_figures(self, fault: Fault, after_s: float = 1.0) -> None:
        """What the outside world saw of a full disk, on the fault: the workload's writes
        during it that were not acknowledged (by status; None: no answer) and the
        ``replicator.disk_full`` alerts its node raised (live events)."""
        assert self.workload is not None and self.watch is not None
        if fault.started is None:
            return
        until = (fault.ended or time.time()) + after_s
        during = [w for w in list(self.workload.writes) if fault.started <= w.sent <= until]
        refused = Counter(str(w.status) for w in during if w.acked is None)
        node = fault.detail.get("node")
        alerts = [
            e
            for e in list(self.watch.seen)
            if e.type == "AlertRaised"
            and e.payload.get("code") == "replicator.disk_full"
            and e.node == node
            and fault.started - 0.5 <= e.received <= until + 30
        ]
        fault.detail.update(
            writes=len(during),
            writes_not_acked=sum(refused.values()),
            not_acked_by_status=dict(sorted(refused.items())),
            disk_full_alerts=len(alerts),
            disk_full_reason=alerts[0].payload.get("message", "") if alerts else "",
        )

    def _slow_figures(self, fault: Fault) -> None:
        """What the outside world saw of a slow disk, on the fault: the workload's ack latency
        (ms, p50 and max) for the writes sent during it and for those sent in as long a time
        just before it, and the writes during it that were not acknowledged."""
        assert self.workload is not None
        if fault.started is None:
            return
        end = fault.ended or time.time()
        span = max(end - fault.started, 2.0)
        writes = list(self.workload.writes)
        during = [w for w in writes if fault.started <= w.sent <= end]
        before = [w for w in writes if fault.started - span <= w.sent < fault.started]
        fault.detail.update(
            writes=len(during),
            writes_not_acked=sum(1 for w in during if w.acked is None),
            ack_ms_before=_latency_ms(before),
            ack_ms_during=_latency_ms(during),
        )

    def _wait_sagas(self, t0: float, timeout: float) -> bool:
        """Until every saga started since ``t0`` (live events) has ended, or ``timeout``."""
        assert self.watch is not None
        deadline = time.monotonic() + timeout
        while True:
            seen = [e for e in self.watch.seen if e.received >= t0 - 1]
            started = {e.payload.get("saga_id") for e in seen if e.type == "SagaStarted"}
            started |= set(self.nemesis.sagas)
            ended = {
                e.payload.get("saga_id")
                for e in self.watch.seen
                if e.type in ("SagaCompleted", "SagaFailed")
            }
            if started <= ended:
                return True
            if time.monotonic() > deadline:
                return False
            self.topo.supervise()
            time.sleep(0.3)

    def _check_events(self, t_check: float, converge_s: float = 20) -> list[Violation]:
        assert self.watch is not None
        deadline = time.monotonic() + converge_s
        while True:
            seen = [
                e
                for e in list(self.watch.seen)
                if e.received <= t_check and e.id not in self.reported_events
            ]
            self.stored = self.watch.stored()
            found = check_events(seen, self.stored)
            if not found or time.monotonic() > deadline:
                break
            time.sleep(2)
        for v in found:
            self.reported_events |= {e["id"] for e in v.detail.get("events", [])}
            self.reported_events |= set(v.detail.get("duplicates", []))
        return found

    def _check_records(self, t_check: float) -> tuple[list[Violation], list[str], list[str]]:
        assert self.workload is not None
        present = self.items()
        if present is None:
            return (
                [
                    Violation(
                        "lost_acked_records",
                        "GET /items on the public port failed: the records could not be read",
                    )
                ],
                [],
                [],
            )
        acked = [w for w in self.workload.acked() if (w.acked or 0) < t_check - 0.5]
        starts = [f.started for f in self.faults if f.started is not None]
        windows = failover_windows(self.stored, starts)
        found, lost, lag = check_records(
            acked, present, windows, self.reported_records | self.lag_records
        )
        self.reported_records |= set(lost)
        self.lag_records |= set(lag)
        return found, lost, lag

    def items(self, tries: int = 20) -> set[str] | None:
        """The record names the Active serves (GET /items through the public port)."""
        for _ in range(tries):
            conn = http.client.HTTPConnection(
                self.topo.public_host, self.topo.public_port, timeout=5
            )
            try:
                conn.request("GET", "/items")
                answer = conn.getresponse()
                body = answer.read()
                if answer.status == 200:
                    return set(json.loads(body))
            except (OSError, http.client.HTTPException, ValueError):
                pass
            finally:
                conn.close()
            time.sleep(0.5)
        return None

    def _outage(self, since: float, until: float) -> float:
        """The longest time the public port went without answering 200 in [since, until]."""
        assert self.sampler is not None
        ok = [s.t for s in self.sampler.samples if since <= s.t <= until and s.public]
        times = [since, *ok, until]
        return round(max(b - a for a, b in itertools.pairwise(times)), 2)

    def wait_live(self, what: str, found: Callable[[list[Seen]], bool], timeout: float) -> bool:
        """Until ``found`` holds of the events seen live (the supervisor ticking meanwhile)."""
        assert self.watch is not None
        deadline = time.monotonic() + timeout
        while not found(list(self.watch.seen)):
            if time.monotonic() > deadline:
                log.warning("not seen within %ss: %s", timeout, what)
                return False
            self.topo.supervise()
            time.sleep(0.05)
        return True

    # -- the end -------------------------------------------------------------------------------

    def close(self) -> list[Violation]:
        """Stop everything; violations found while stopping (a process that did not stop
        cleanly on SIGTERM)."""
        for part in (self.workload, self.sampler):
            if part is not None:
                part.stop()
        if self.watch is not None and not self.stored:
            try:
                self.stored = self.watch.stored(10)
            except Exception as exc:
                log.warning("reading the stream at the end: %r", exc)
        before = len(self.topo.crashes)
        self.topo.close()
        if self.watch is not None:
            self.watch.close()
        return check_crashes(self.topo.crashes[before:], {})


def mid_saga(
    faults: list[Fault], step: int, until_saga_end: bool = False
) -> Callable[[ChaosRun], list[Fault]]:
    """A managed switchover, then ``faults`` applied together once its step ``step`` has
    started (seen live), healed after their ``hold_s`` or, with ``until_saga_end``, only once
    the saga has ended (a killed process stays down until then)."""

    def during(run: ChaosRun) -> list[Fault]:
        switchover = Fault("switchover")
        run.nemesis.apply(switchover)
        if not run.nemesis.sagas:
            log.warning("the switchover was not accepted: %s", switchover.detail)
            return [switchover]
        saga = run.nemesis.sagas[-1]
        run.wait_live(
            f"step {step} of saga {saga}",
            lambda seen: any(
                e.type == "SagaStepStarted"
                and e.payload.get("saga_id") == saga
                and e.payload.get("index", -1) >= step
                for e in seen
            ),
            60,
        )
        heals = [run.nemesis.apply(f) for f in faults]
        for f in faults:
            f.detail["after_step"] = step
        if until_saga_end:
            run.wait_live(
                f"the end of saga {saga}",
                lambda seen: any(
                    e.type in ("SagaCompleted", "SagaFailed") and e.payload.get("saga_id") == saga
                    for e in seen
                ),
                120,
            )
        else:
            end = time.monotonic() + max((f.hold_s for f in faults), default=0)
            while time.monotonic() < end:
                run.topo.supervise()
                time.sleep(0.1)
        for heal in heals:
            if heal is not None:
                heal()
        return [switchover, *faults]

    return during


def _latency_ms(writes: list[Write]) -> dict[str, float | int | None]:
    """The acknowledged writes' latency: how many, the median and the longest (ms)."""
    took = sorted((w.acked - w.sent) * 1000 for w in writes if w.acked is not None)
    if not took:
        return {"acked": 0, "p50": None, "max": None}
    return {"acked": len(took), "p50": round(statistics.median(took), 1), "max": round(took[-1], 1)}


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _read_from(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""
