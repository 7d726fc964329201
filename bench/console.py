"""Console benchmark (issue 20): a synthetic projection of N clusters (500 and 2,000;
``--quick``: 500) behind one real orchestrator and nats-server (bench/console_rig.py), and the
web console in headless Chromium (Debian's, driven by selenium). Each size is a run of its own
(a fresh nats-server and orchestrator).

    python bench/console.py [--quick] [--clusters 500,2000] [--seconds S]
                            [--out bench/results/console.json]

Measured, each beside its baseline from the same run:

1. ``GET /api/v1/clusters`` with N clusters: bytes and latency p50/p99 (20 requests); the
   baseline is ``GET /api/v1/whoami`` (the API with no data) over the same connection.
2. The overview's first render: from the navigation (token already in the tab) until the page
   shows its first cluster rows, and the bytes the page transferred (every resource, the API
   calls included), with the browser's cache off; then the same with cached assets (median
   of 5). Target: ``first_render_s`` <= 1 s. Baseline: the login page, cache off (no data).
3. Updates: every cluster changes every second (its Active's alert raised, then cleared the
   next second: the overview's alert count changes) for ``--seconds``. The delay from
   publishing a change to the page showing it, for the clusters on the page; beside it, the
   delay to a plain SSE client of ``GET /api/v1/stream`` (a process of its own) reading the
   same changes: the bus and the orchestrator without the page; and the orchestrator's CPU
   share during the changes beside its share idle with the same N clusters.
   Target: ``update_delay_s_p99`` <= 0.5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from console_browser import Browser, page_delays
from console_rig import VIEWER, ConsoleRig, cluster_name
from repl_util import percentile
from tandem.events.catalog import AlertCleared, AlertRaised
from tandem.events.catalog.alerts import AlertClearedPayload, AlertRaisedPayload
from tandem.events.catalog.vocabulary import Severity

CODE = "bench.flap"


def api_figures(rig: ConsoleRig, requests: int = 20) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {VIEWER}"}
    with httpx.Client(base_url=rig.url, headers=headers, timeout=60) as api:

        def timed(path: str) -> tuple[float, int]:
            started = time.perf_counter()
            answer = api.get(path)
            answer.raise_for_status()
            return time.perf_counter() - started, len(answer.content)

        clusters = [timed("/api/v1/clusters") for _ in range(requests)]
        whoami = [timed("/api/v1/whoami") for _ in range(requests)]
    return {
        "clusters_bytes": clusters[-1][1],
        "clusters_s_p50": percentile([t for t, _ in clusters], 50),
        "clusters_s_p99": percentile([t for t, _ in clusters], 99),
        "baseline_whoami_s_p50": percentile([t for t, _ in whoami], 50),
    }


def change(i: int, raised: bool, at_ms: int) -> AlertRaised | AlertCleared:
    c = cluster_name(i)
    if raised:
        payload = AlertRaisedPayload(
            code=CODE, severity=Severity.WARNING, message=f"published at {at_ms}"
        )
        return AlertRaised(cluster=c, node="east", epoch=1, payload=payload)
    return AlertCleared(
        cluster=c, node="east", epoch=1, payload=AlertClearedPayload(code=CODE, reason=str(at_ms))
    )


async def publish_changes(rig: ConsoleRig, clusters: int, seconds: int) -> list[list[int]]:
    """Every second, every cluster's alert raised or cleared; (cluster, raised, ms) sent."""
    bus = await rig.connect()
    sent: list[list[int]] = []
    try:
        for second in range(seconds):
            tick = time.monotonic()
            at_ms = int(time.time() * 1000)
            raised = second % 2 == 0
            events = [change(i, raised, at_ms) for i in range(clusters)]
            for start in range(0, len(events), 1000):
                await bus.publish_many(events[start : start + 1000])
            sent += [[i, int(raised), at_ms] for i in range(clusters)]
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
    finally:
        await bus.close()
    return sent


def stream_delays(url: str, expected: int, deadline_s: float, out: Path) -> None:
    """A plain SSE client, in a process of its own: for each change event, the time since it
    was published; written to ``out`` as JSON once ``expected`` came, none came for 5 s, or
    ``deadline_s`` passed."""
    headers = {"Authorization": f"Bearer {VIEWER}"}
    delays: list[float] = []
    deadline = time.monotonic() + deadline_s
    with (
        httpx.Client(base_url=url, headers=headers, timeout=httpx.Timeout(10, read=5)) as api,
        api.stream("GET", "/api/v1/stream") as response,
    ):
        kind = ""
        try:
            for line in response.iter_lines():
                if len(delays) >= expected or time.monotonic() > deadline:
                    break
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind == "event":
                    payload = json.loads(line[6:])["payload"]
                    if payload.get("code") == CODE:
                        text = payload.get("message") or payload.get("reason") or ""
                        delays.append(time.time() - int(text.rsplit(" ", 1)[-1]) / 1000)
        except httpx.ReadTimeout:
            pass  # nothing for 5 s: the changes ended (keepalives come every 15 s only)
    out.write_text(json.dumps(delays))


def run_size(clusters: int, seconds: int) -> dict[str, Any]:
    rig = ConsoleRig(clusters)
    started = time.monotonic()
    try:
        rig.start()
        result: dict[str, Any] = {"clusters": clusters, "change_seconds": seconds}
        result["api"] = api_figures(rig)
        cpu_idle = rig.orchestrator_cpu_s()
        time.sleep(5)
        idle_share = (rig.orchestrator_cpu_s() - cpu_idle) / 5
        with Browser(rig.url) as browser:
            result["page"] = browser.first_render(VIEWER)
            sse_file = rig.root / "sse-delays.json"
            reader = multiprocessing.get_context("spawn").Process(
                target=stream_delays, args=(rig.url, clusters * seconds, seconds + 30, sse_file)
            )
            reader.start()
            browser.watch_rows()
            cpu_before = rig.orchestrator_cpu_s()
            sent = asyncio.run(publish_changes(rig, clusters, seconds))
            time.sleep(3)  # the last changes reach the page
            cpu = rig.orchestrator_cpu_s() - cpu_before
            reader.join(60)
            if reader.is_alive():
                reader.kill()
            sse = json.loads(sse_file.read_text()) if sse_file.exists() else []
            delays = page_delays(browser.seen_rows(), sent)
        result["updates"] = {
            "published": len(sent),
            "page_changes_seen": len(delays),
            "update_delay_s_p50": percentile(delays, 50) if delays else None,
            "update_delay_s_p99": percentile(delays, 99) if delays else None,
            "baseline_sse_events": len(sse),
            "baseline_sse_delay_s_p50": percentile(sse, 50) if sse else None,
            "baseline_sse_delay_s_p99": percentile(sse, 99) if sse else None,
            "orchestrator_cpu_share": round(cpu / (seconds + 3), 3),
            "baseline_orchestrator_idle_cpu_share": round(idle_share, 3),
        }
        result["targets"] = {
            "first_render_s<=1": result["page"]["first_render_s"] <= 1.0,
            "update_delay_s_p99<=0.5": bool(delays) and percentile(delays, 99) <= 0.5,
        }
        result["duration_s"] = round(time.monotonic() - started, 1)
        return result
    finally:
        rig.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="500 clusters, 10 s of changes")
    parser.add_argument("--clusters", default=None, help="sizes, comma-separated (500,2000)")
    parser.add_argument("--seconds", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("bench/results/console.json"))
    args = parser.parse_args()
    sizes = [int(n) for n in (args.clusters or ("500" if args.quick else "500,2000")).split(",")]
    seconds = args.seconds or (10 if args.quick else 30)
    result: dict[str, Any] = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "runs": [run_size(n, seconds) for n in sizes],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
