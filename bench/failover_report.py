"""The failover benchmark's result (bench/failover.py): metrics, ratios and notes from the
scenarios' details, the targets they are judged against, the breakdown of where the time went,
the logs of slow cycles and the table printed at the end."""

from __future__ import annotations

import statistics
import sys
from typing import Any

from failover_rig import Rig, log_grep
from failover_scenarios import CYCLE_TIMEOUT_S

# name: (section.key, "max"/"min", bound)
TARGETS: dict[str, tuple[str, str, float]] = {
    "rto_s_p50": ("metrics.rto_s_p50", "max", 1.5),
    "rto_s_p99": ("metrics.rto_s_p99", "max", 3.0),
    "switchover_s_p50": ("metrics.switchover_s_p50", "max", 0.5),
    "false_failovers": ("metrics.false_failovers", "max", 0),
    "false_fences": ("metrics.false_fences", "max", 0),
    "loaded_false_failovers": ("metrics.loaded_false_failovers", "max", 0),
    "loaded_rto_s_p99": ("metrics.loaded_rto_s_p99", "max", 3.0),
}

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


# -- report -------------------------------------------------------------------------------------


def default_timings() -> dict[str, float]:
    """The timings the bench nodes run with: the defaults (their configs set none)."""
    from tandem.agent.config import FailoverConfig, LeaseConfig
    from tandem.monitor.settings import HeartbeatConfig

    lease, failover = LeaseConfig(), FailoverConfig()
    return {
        "heartbeat_interval_s": HeartbeatConfig().interval_s,
        "lease_ttl_s": lease.ttl_s,
        "lease_renew_every_s": lease.renew_every_s,
        "lease_fence_margin_s": lease.fence_margin_s,
        "failover_timeout_s": failover.timeout_s,
    }


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


def rto_metrics(
    cycles: list[dict[str, Any]], pre: str, metrics: dict[str, Any], notes: dict[str, str]
) -> None:
    """The RTO figures of ``cycles``, their keys prefixed with ``pre`` ("" or "loaded_")."""
    # A failed cycle counts at the give-up time: a lower bound of its RTO.
    values = [c["rto_s"] if c.get("ok") else CYCLE_TIMEOUT_S for c in cycles]
    metrics[f"{pre}rto_s_p50"] = p50(values)
    metrics[f"{pre}rto_s_p99"] = p99(values)
    metrics[f"{pre}rto_s_max"] = round(max(values), 3) if values else None
    metrics[f"{pre}rto_cycles"] = len(cycles)
    metrics[f"{pre}rto_failed_cycles"] = sum(1 for c in cycles if not c.get("ok"))
    metrics[f"{pre}failover_detect_s_p50"] = p50(
        [c["detect_s"] for c in cycles if c.get("detect_s") is not None]
    )
    metrics[f"{pre}failover_saga_s_p50"] = p50(
        [c["saga_s"] for c in cycles if c.get("saga_s") is not None]
    )
    if len(values) < 100:
        notes[f"{pre}rto_s_p99"] = f"the max of {len(values)} cycles (fewer than 100)"
    if metrics[f"{pre}rto_failed_cycles"]:
        notes[f"{pre}rto_s"] = f"failed cycles count as {CYCLE_TIMEOUT_S:g} s (a lower bound)"


def summarize(found: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    metrics: dict[str, Any] = {}
    ratios: dict[str, Any] = {}
    notes: dict[str, str] = {}
    rto = found.get("rto")
    if rto is not None:
        rto_metrics(rto["cycles"], "", metrics, notes)
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
    summarize_loaded(found, metrics, ratios, notes)
    return metrics, ratios, notes


def summarize_loaded(
    found: dict[str, Any], metrics: dict[str, Any], ratios: dict[str, Any], notes: dict[str, str]
) -> None:
    """The loaded soak and the loaded RTO, each beside its idle figure of the same run."""
    ls = found.get("loaded_soak")
    if ls is not None:
        metrics["false_fences"] = ls["false_fences"]
        metrics["loaded_false_failovers"] = ls["false_failovers"]
        metrics["loaded_soak_s"] = ls["duration_s"]
        metrics["loaded_soak_heartbeat_lost"] = ls["event_counts"].get("HeartbeatLost", 0)
        metrics["loaded_soak_lease_not_renewed"] = sum(
            v["counts"]["lease_not_renewed"] for v in ls["logs"].values()
        )
        notes["false_fences"] = (
            "during the loaded soak (nothing killed): the larger of the NodeSelfFenced events "
            "on the bus and the agents' 'fences itself' log lines; each one's reason is in "
            "details.loaded_soak.fences"
        )
    lr = found.get("loaded_rto")
    if lr is not None:
        cycles = lr["cycles"]
        rto_metrics(cycles, "loaded_", metrics, notes)
        metrics["idle_rto_s_p50"] = metrics.get("rto_s_p50")  # the same run's, beside it
        metrics["loaded_guard_missed_app"] = sum(
            1 for c in cycles if "guard_killed_app" in c and not c["guard_killed_app"]
        )
        metrics["loaded_app_gone_s_p50"] = p50(
            [c["app_gone_after_s"] for c in cycles if c.get("app_gone_after_s") is not None]
        )
        metrics["loaded_rto_unexpected_fences"] = len(lr["unexpected_fences"])
        if metrics.get("rto_s_p50") and metrics.get("loaded_rto_s_p50"):
            ratios["loaded_rto_over_idle_rto"] = round(
                metrics["loaded_rto_s_p50"] / metrics["rto_s_p50"], 2
            )
        notes["loaded_rto_s"] = (
            "SIGKILL of the Active's agent only (the idle RTO kills its app too): the node guard "
            "kills the app and hides the node; guard_killed_app per cycle in "
            "details.loaded_rto.cycles, app_gone_s from the agent's kill"
        )
    if ls is not None or lr is not None:
        notes["load"] = (
            "two busy loops (both cores) and an fsync writer (256 KiB writes, an fsync after "
            "each, at most 32 MiB/s, in the rig's folder on nats-server's disk, file truncated "
            "every 64 MiB)"
        )
    notes["split_windows"] = (
        "probes answered by both nodes, from tests/system/test_fencing_netns.py (network "
        "namespaces) run by bench/fencing_wire.py, which adds metrics.split_windows"
    )


def breakdown(found: dict[str, Any]) -> dict[str, Any]:
    """Medians of where the time of a failover and of a switchover went (saga steps)."""
    out: dict[str, Any] = {}
    for key, items in (
        ("failover", (found.get("rto") or {}).get("cycles", [])),
        ("switchover", (found.get("switchover") or {}).get("runs", [])),
        ("loaded_failover", (found.get("loaded_rto") or {}).get("cycles", [])),
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
    for key in ("rto", "loaded_rto"):
        rto = found.get(key)
        if not rto:
            continue
        ok = [c["rto_s"] for c in rto["cycles"] if c.get("ok")]
        median = statistics.median(ok) if ok else 0.0
        for c in rto["cycles"]:
            slow = not c.get("ok") or (median and c["rto_s"] > 1.5 * median)
            if not slow or "window" not in c:
                continue
            since, until = c["window"]
            logs = {
                "orchestrator": log_grep(rig.root / "orchestrator.log", LOG_WORDS, since, until)
            }
            for name, node in rig.nodes.items():
                logs[name] = log_grep(node.log, LOG_WORDS, since, until)
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
