"""The chaos run's results: ``chaos.json`` (seed, schedule, per-fault figures, violations;
``metrics.*`` as issue 15 names them, and which fault kinds were applied and which could not
be: ``detail["not_applied"]``), a Markdown page a person reads and its timeline picture (PNG,
matplotlib: faults, role changes, outages per node)."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

from chaos_checkers import stamp
from chaos_observe import Sample, Seen

log = logging.getLogger(__name__)


def applied(f: dict[str, Any]) -> bool:
    """Whether a fault was injected (started, and not recorded as impossible here)."""
    return f.get("started") is not None and "not_applied" not in (f.get("detail") or {})


def metrics(results: list[dict[str, Any]], extra: list[dict[str, Any]]) -> dict[str, Any]:
    violations = [v for r in results for v in r["violations"]] + extra
    by = Counter(v["checker"] for v in violations)
    faults = [f for r in results for f in r["faults"]]
    return {
        "scenarios": len(results),
        "faults_injected": sum(len(r["faults"]) for r in results),
        "faults_applied_by_kind": dict(
            sorted(Counter(f["kind"] for f in faults if applied(f)).items())
        ),
        "faults_not_applied": sum(1 for f in faults if not applied(f)),
        "violations": len(violations),
        "violations_by_checker": dict(sorted(by.items())),
        "lost_acked_records": sum(r["figures"]["lost_acked_records"] for r in results),
        "async_lag_records": sum(r["figures"]["async_lag_records"] for r in results),
        "lost_events": sum(
            len(v["detail"].get("events", [])) for v in violations if v["checker"] == "lost_events"
        ),
        "split_windows": sum(r["figures"]["split_windows"] for r in results),
        "crashes": by.get("crashes", 0),
        "tracebacks": by.get("tracebacks", 0),
        "scenarios_not_ready": sum(1 for r in results if not r["ready"]),
        "sagas": sum(len(r["sagas"]) for r in results),
        "sagas_completed": sum(
            1 for r in results for s in r["sagas"].values() if s.get("state") == "completed"
        ),
    }


def write_json(
    path: Path,
    seed: int,
    results: list[dict[str, Any]],
    extra: list[dict[str, Any]],
    started: float,
) -> dict[str, Any]:
    doc = {
        "benchmark": "chaos",
        "what": "real 3-node NATS cluster (R3), two orchestrators, a pair of agents and the "
        "demo app on loopback; seeded faults; checkers read only the outside world",
        "seed": seed,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "duration_s": round(time.time() - started, 1),
        "metrics": metrics(results, extra),
        "schedule": [
            [{k: f[k] for k in ("kind", "target", "at_s", "hold_s")} for f in r["faults"]]
            for r in results
        ],
        "scenarios": results,
        "violations_at_stop": extra,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return doc


def outages(samples: list[Sample], key: str | None) -> list[tuple[float, float]]:
    """Intervals in which ``key``'s app (or, for None, the public port) did not answer."""
    out: list[tuple[float, float]] = []
    start: float | None = None
    for s in samples:
        up = s.public if key is None else s.serving.get(key, False)
        if not up and start is None:
            start = s.t
        elif up and start is not None:
            out.append((start, s.t))
            start = None
    if start is not None and samples:
        out.append((start, samples[-1].t))
    return out


def timeline(
    path: Path,
    results: list[dict[str, Any]],
    samples: list[Sample],
    stored: list[Seen],
    nodes: tuple[str, ...],
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not samples:
        return
    t0 = samples[0].t
    rows = ["faults", *[f"app {n} serving" for n in nodes], "public port"]
    fig, ax = plt.subplots(figsize=(14, 3.8))
    for i, node in enumerate(nodes):
        up = [(a - t0, b - a) for a, b in _up(samples, node)]
        ax.broken_barh(up, (i + 1 - 0.35, 0.7), color="tab:green")
    ax.broken_barh(
        [(a - t0, b - a) for a, b in outages(samples, None)],
        (len(nodes) + 1 - 0.35, 0.7),
        color="tab:red",
    )
    for r in results:
        for f in r["faults"]:
            if f.get("started") is None:
                continue
            width = max(0.3, (f.get("ended") or f["started"]) - f["started"])
            color = "tab:blue" if f["kind"] == "switchover" else "tab:orange"
            ax.broken_barh([(f["started"] - t0, width)], (-0.35, 0.7), color=color)
            ax.text(f["started"] - t0, 0.4, f["kind"].replace("-", " "), fontsize=6, rotation=30)
        bad = [v for v in r["violations"] if v["checker"] != "tracebacks"]
        if bad:
            ax.axvline(r["checked"] - t0, color="black", linestyle=":", linewidth=0.8)
    for e in stored:
        if e.type == "RoleChanged":
            t = stamp(e.occurred_at)
            if t is not None:
                ax.axvline(t - t0, color="tab:purple", linewidth=1)
                ax.text(
                    t - t0,
                    len(nodes) + 1.5,
                    f"→{e.payload.get('active_node')}",
                    fontsize=7,
                    color="tab:purple",
                )
    ax.set_yticks(range(len(rows)), rows)
    ax.set_ylim(-0.8, len(nodes) + 2)
    ax.set_xlabel(
        "seconds since the first sample (green: app answers; red: public port "
        "down; orange: fault; purple: role change; dotted: scenario with a violation)"
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _up(samples: list[Sample], node: str) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    start: float | None = None
    for s in samples:
        if s.serving.get(node) and start is None:
            start = s.t
        elif not s.serving.get(node) and start is not None:
            out.append((start, s.t))
            start = None
    if start is not None:
        out.append((start, samples[-1].t))
    return out


def _disk_note(f: dict[str, Any]) -> str:
    """A disk fault's figures, in brief. Full: the ballast, the writes not acknowledged
    during it, the ``replicator.disk_full`` alerts its node raised. Slow: the throttle, the
    workload's ack latency before and during it, how far the Passive fell behind."""
    d = f.get("detail") or {}
    if "not_applied" in d:
        return f" (not applied: {d['not_applied']})"
    if f.get("kind") == "slow-disk" and "throttle" in d:
        t = d["throttle"]
        before, during = d.get("ack_ms_before") or {}, d.get("ack_ms_during") or {}
        behind = (d.get("behind_at_heal") or {}).get("records_behind")
        return (
            f" ({f['target']}; {t.get('write_iops', '-')} write IO/s, "
            f"{t.get('write_bps', 0) // 1024} KiB/s; ack ms p50 {before.get('p50')} -> "
            f"{during.get('p50')}, max {before.get('max')} -> {during.get('max')}; "
            f"{d.get('writes_not_acked', 0)}/{d.get('writes', 0)} writes not acked; "
            f"Passive {behind} records behind at the end)"
        )
    if f.get("kind") != "fill-disk" or "ballast_bytes" not in d:
        return ""
    return (
        f" ({f['target']}; {d['ballast_bytes'] / 2**20:.1f} MiB ballast, "
        f"{d.get('free_after', 0) // 1024} KiB left, "
        f"{d.get('writes_not_acked', 0)}/{d.get('writes', 0)} writes not acked, "
        f"{d.get('disk_full_alerts', 0)} disk_full alert(s))"
    )


def markdown(path: Path, doc: dict[str, Any], png: Path | None) -> None:
    m = doc["metrics"]
    lines = [
        "# Chaos run",
        "",
        f"Seed {doc['seed']}, started {doc['started']}, {doc['duration_s']} s. {doc['what']}.",
        "Written by `bench/chaos.py` (`make chaos`, `make chaos-quick`).",
        "",
        "| figure | value |",
        "| --- | --- |",
        *[f"| {k} | {v} |" for k, v in m.items()],
        "",
    ]
    if png is not None and png.exists():
        lines += [f"![timeline]({png.name})", ""]
    lines += [
        "## Scenarios",
        "",
        "| # | faults | ready | sagas | outage s | violations |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for i, r in enumerate(doc["scenarios"], 1):
        faults = ", ".join(
            f"{f['kind']} {f.get('process') or f['target']}{_disk_note(f)}".strip()
            for f in r["faults"]
        )
        sagas = ", ".join(s.get("state", "?") for s in r["sagas"].values()) or "-"
        counts = Counter(v["checker"] for v in r["violations"])
        said = ", ".join(f"{k} {n}" for k, n in sorted(counts.items())) or "0"
        ready = "yes" if r["ready"] else f"no ({r['not_ready_because']})"
        lines.append(
            f"| {i} | {faults} | {ready} | {sagas} | {r['figures']['public_outage_s']} | {said} |"
        )
    lines += ["", "## Violations", ""]
    for i, r in enumerate(doc["scenarios"], 1):
        for v in r["violations"]:
            lines.append(f"- scenario {i} ({r['name']}), **{v['checker']}**: {v['message'][:600]}")
    for v in doc["violations_at_stop"]:
        lines.append(f"- at stop, **{v['checker']}**: {v['message'][:600]}")
    if not any(r["violations"] for r in doc["scenarios"]) and not doc["violations_at_stop"]:
        lines.append("None.")
    lines += ["", _injected(doc), ""]
    path.write_text("\n".join(lines))


def _injected(doc: dict[str, Any]) -> str:
    """Which fault kinds this run applied, which it could not (and why), and what it never
    injects."""
    faults = [f for r in doc["scenarios"] for f in r["faults"]]
    done = Counter(f["kind"] for f in faults if applied(f))
    why = Counter(
        f"{f['kind']}: {(f.get('detail') or {}).get('not_applied', 'not started')}"
        for f in faults
        if not applied(f)
    )
    said = ", ".join(f"{k} {n}" for k, n in sorted(done.items())) or "none"
    text = f"Applied: {said}."
    if why:
        text += " Not applied: " + "; ".join(f"{k} ({n})" for k, n in sorted(why.items())) + "."
    return (
        text + " A full disk (`fill-disk`) fills the node's data filesystem (an ext4 image "
        "of its own, loop-mounted) with a ballast file beside the protected folder; a slow "
        "disk (`slow-disk`) throttles the node's processes' IO on that loop device (their "
        "blkio cgroup). Not injected in this schedule: a bus partition (it runs only in the "
        "network-namespace test, tests/chaos/test_chaos_partition.py)."
    )
