"""The chaos suite's checkers. Each reads only the outside world, as recorded by
``chaos_observe`` or read at the end of a scenario (the stream, KV, the API, the demo app, the
process logs and exit codes), and returns ``Violation``s naming exactly what broke:

(a) ``split``: never two nodes serving (two demo apps answering /health in one sample);
(b) ``lost_acked_records``: no acknowledged record missing on the final Active, except those
    acknowledged in the async-lag window of a failover (from 1 s before the fault that led to
    it up to its role change: counted apart, ``async_lag_records``);
(c) ``lost_events``: every event a live subscriber saw is in ``TANDEM_EVENTS`` (by
    ``Nats-Msg-Id``); and no event id is stored twice;
(d) ``one_active`` / ``sagas``: exactly one Active at the end (KV ``tandem_roles``, the
    leader's API view, the demo apps answering) and every saga started has ended (stream
    events); a saga that failed after its pivot is a violation too (after the pivot a saga
    only goes forward);
(e) ``crashes``: no process exited unless the nemesis ended it, and no process log holds a
    Python traceback.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from chaos_observe import Sample, Seen, Write
from chaos_procs import Exit

LAG_BEFORE_FAULT_S = 1.0


@dataclass
class Violation:
    checker: str
    message: str
    detail: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        return f"[{self.checker}] {self.message}"


def stamp(text: str) -> float | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


# (a) -------------------------------------------------------------------------------------------


def split_windows(samples: Sequence[Sample], since: float = 0.0) -> list[dict[str, Any]]:
    """Runs of consecutive samples in which more than one demo app answered."""
    windows: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for s in samples:
        if s.t < since:
            continue
        both = sorted(n for n, ok in s.serving.items() if ok)
        if len(both) > 1:
            if current is None:
                current = {"start": s.t, "end": s.t, "samples": 0, "nodes": both}
                windows.append(current)
            current["end"] = s.t
            current["samples"] += 1
        else:
            current = None
    return windows


def check_split(samples: Sequence[Sample], since: float) -> list[Violation]:
    return [
        Violation(
            "split",
            f"{w['samples']} sample(s) with {' and '.join(w['nodes'])} both "
            f"serving, {w['end'] - w['start']:.2f}s",
            w,
        )
        for w in split_windows(samples, since)
    ]


# (b) -------------------------------------------------------------------------------------------


def failover_windows(
    stored: Sequence[Seen], fault_starts: Sequence[float]
) -> list[tuple[float, float]]:
    """(from, to) windows of async lag: for each failover's role change, from 1 s before the
    first fault of the scenario that preceded it (or 1 s before the change itself) up to the
    change. From the first, not the last: an earlier bus fault holds the journal back (its
    publishes wait for a stream leader), so what the Active acknowledged since then may be
    the lag that a later fault of the Active turns into a loss, as async mode allows."""
    kinds = {
        e.payload.get("saga_id"): e.payload.get("kind") for e in stored if e.type == "SagaStarted"
    }
    out = []
    for e in stored:
        if e.type != "RoleChanged" or kinds.get(e.correlation_id) != "failover":
            continue
        changed = stamp(e.occurred_at)
        if changed is None:
            continue
        before = [f for f in fault_starts if f <= changed]
        out.append(((min(before) if before else changed) - LAG_BEFORE_FAULT_S, changed))
    return out


def check_records(
    acked: Iterable[Write], present: set[str], windows: list[tuple[float, float]], already: set[str]
) -> tuple[list[Violation], list[str], list[str]]:
    """Violations for acknowledged records missing on the Active (each reported once: not in
    ``already``); the lost and the lag-exempt record names."""
    lost, lag = [], []
    for w in acked:
        if w.name in present or w.name in already:
            continue
        assert w.acked is not None
        if any(lo <= w.acked <= hi for lo, hi in windows):
            lag.append(w.name)
        else:
            lost.append(w.name)
    found = []
    if lost:
        found.append(
            Violation(
                "lost_acked_records",
                f"{len(lost)} acknowledged record(s) missing "
                f"on the final Active: {', '.join(lost[:20])}",
                {"records": lost},
            )
        )
    return found, lost, lag


# (c) -------------------------------------------------------------------------------------------


def check_events(seen: Sequence[Seen], stored: Sequence[Seen]) -> list[Violation]:
    stored_ids = Counter(e.id for e in stored)
    missing = [e for e in seen if e.id not in stored_ids]
    found = []
    if missing:
        listed = [f"{e.type} {e.id} from {e.node} at {e.occurred_at}" for e in missing]
        found.append(
            Violation(
                "lost_events",
                f"{len(missing)} event(s) a live subscriber saw are "
                f"not in TANDEM_EVENTS: {'; '.join(listed[:12])}",
                {"events": [asdict(e) for e in missing]},
            )
        )
    twice = sorted(i for i, n in stored_ids.items() if n > 1)
    if twice:
        found.append(
            Violation(
                "lost_events",
                f"{len(twice)} event id(s) stored more than once: {', '.join(twice[:12])}",
                {"duplicates": twice},
            )
        )
    return found


# (d) -------------------------------------------------------------------------------------------


def check_one_active(
    role: dict[str, Any] | None, view: dict[str, Any] | None, serving: dict[str, bool]
) -> list[Violation]:
    found = []
    active = role.get("active") if role else None
    if active is None:
        found.append(Violation("one_active", "no role record in tandem_roles"))
    if view is None:
        found.append(Violation("one_active", "no orchestrator leads or its API gives no view"))
    else:
        if view.get("active") != active:
            found.append(
                Violation(
                    "one_active",
                    f"the API's Active {view.get('active')} is not the role record's {active}",
                    {"role": role},
                )
            )
        roles = {n["name"]: n["role"] for n in view.get("nodes", [])}
        actives = sorted(n for n, r in roles.items() if r == "active")
        if actives != ([active] if active else []):
            found.append(
                Violation(
                    "one_active",
                    f"nodes playing active: {actives} (role record: {active})",
                    {"roles": roles},
                )
            )
    up = sorted(n for n, ok in serving.items() if ok)
    if up != ([active] if active else []):
        found.append(
            Violation(
                "one_active",
                f"demo apps answering at the end: {up} (role record: {active})",
                {"serving": serving},
            )
        )
    return found


def saga_outcomes(stored: Sequence[Seen]) -> dict[str, dict[str, Any]]:
    """saga id -> kind, state (running/completed/failed), reason, whether the pivot ended."""
    sagas: dict[str, dict[str, Any]] = {}
    for e in stored:
        p = e.payload
        if e.type == "SagaStarted":
            pivots = [s.get("command") for s in p.get("plan", []) if s.get("pivot")]
            epochs = [int(s.get("epoch", 0)) for s in p.get("plan", []) if s.get("pivot")]
            sagas[p["saga_id"]] = {
                "kind": p.get("kind"),
                "state": "running",
                "reason": "",
                "pivots": pivots,
                "pivot_epoch": max(epochs, default=0),
                "pivot_done": False,
                "started": e.occurred_at,
            }
        saga = sagas.get(p.get("saga_id", ""))
        if saga is None:
            continue
        if e.type == "SagaStepCompleted" and p.get("command") in saga["pivots"]:
            saga["pivot_done"] = True
        elif e.type in ("SagaCompleted", "SagaFailed"):
            saga["state"] = "completed" if e.type == "SagaCompleted" else "failed"
            saga["reason"] = p.get("reason", "")
    return sagas


def check_sagas(stored: Sequence[Seen], only: set[str] | None = None) -> list[Violation]:
    found = []
    # A saga that failed after its pivot because a later one moved the cluster on (its start
    # was unknown to the leader that ran the later one) kept its promise if the stream shows
    # that later role change: the cluster went forward, not back.
    epochs = [int(e.payload.get("new_epoch", 0)) for e in stored if e.type == "RoleChanged"]
    for saga_id, s in saga_outcomes(stored).items():
        if only is not None and saga_id not in only:
            continue
        superseded = s["reason"].startswith("superseded:") and any(
            epoch > s["pivot_epoch"] for epoch in epochs
        )
        if s["state"] == "running":
            found.append(Violation("sagas", f"{s['kind']} saga {saga_id} never ended", s))
        elif s["state"] == "failed" and s["pivot_done"] and not superseded:
            found.append(
                Violation(
                    "sagas", f"{s['kind']} saga {saga_id} failed after its pivot: {s['reason']}", s
                )
            )
    return found


# (e) -------------------------------------------------------------------------------------------

_TB = "Traceback (most recent call last):"
_STAMP = re.compile(r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d")
_RAISED = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Group|Exit|Interrupt|Timeout)\b")
_CHAINED = ("Traceback", "During handling", "The above exception")


def tracebacks(text: str) -> list[list[str]]:
    """Each traceback in a log (a chain or an exception group as one): its lines, up to and
    including the last exception line."""
    out: list[list[str]] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if _TB not in lines[i]:
            i += 1
            continue
        block = [lines[i]]
        i += 1
        while i < len(lines) and not _STAMP.match(lines[i]):
            line = lines[i]
            if line and not line[0].isspace() and not line.startswith(_CHAINED):
                # An exception line: the end, unless a group's body or a chain follows.
                rest = [ln for ln in lines[i + 1 : i + 3] if ln.strip()]
                block.append(line)
                i += 1
                if rest and (rest[0][0].isspace() or rest[0].startswith(_CHAINED)):
                    continue
                break
            block.append(line)
            i += 1
        out.append(block)
    return out


def excerpt(block: list[str]) -> str:
    """The innermost frame and the exception (of a group: its sub-exception too)."""
    files = [ln.strip(" |") for ln in block if ln.strip(" |").startswith("File ")]
    raised = [ln.strip(" |") for ln in block if _RAISED.match(ln.strip(" |"))]
    return " | ".join([*files[-1:], *(raised[-1:] or [block[-1].strip()])])


def check_crashes(exits: Sequence[Exit], logs: dict[str, str]) -> list[Violation]:
    """``logs``: process name -> what it logged in the scenario."""
    found = []
    for e in exits:
        tb = tracebacks(logs.get(e.name, ""))
        last = excerpt(tb[-1]) if tb else "(no traceback in its log)"
        how = e.note or f"exited with {e.code} without a fault"
        found.append(
            Violation(
                "crashes",
                f"{e.name} (pid {e.pid}) {how}: {last}",
                {**asdict(e), "traceback": tb[-1] if tb else []},
            )
        )
    for name, text in sorted(logs.items()):
        for block in tracebacks(text):
            found.append(
                Violation(
                    "tracebacks",
                    f"{name} logged a traceback: {excerpt(block)}",
                    {"process": name, "traceback": block},
                )
            )
    return found


def summary(violations: Sequence[Violation]) -> str:
    return "\n".join(str(v) for v in violations) or "no violation"


def dumps(violations: Sequence[Violation]) -> str:
    return json.dumps([v.as_dict() for v in violations], indent=2, default=str)
