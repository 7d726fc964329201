"""Bus benchmark: our event publish (envelope + validation + JSON) against raw nats-py publish
of the same bytes, in the same run, on an embedded nats-server; plus consume throughput.

    python bench/bus.py [--quick] [--out bench/results/bus.json]

Target: ``ratios.raw_over_ours`` (raw batched msgs/s divided by our batched events/s) <= 1.5.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from secured_bus import start_secured_server
from tandem.events.bus import Bus, event_headers
from tandem.events.catalog import AlertRaised
from tandem.events.catalog.alerts import AlertRaisedPayload
from tandem.events.catalog.vocabulary import Severity
from tandem.events.consumer import ConsumerOptions, DurableConsumer
from tandem.events.envelope import Event
from tandem.events.settings import load_bus_settings, load_stream_settings
from tandem.events.subjects import EVENTS_STREAM, event_subject

TARGET_RATIO = 1.5


def make_event(i: int) -> AlertRaised:
    return AlertRaised(
        cluster="bench",
        node="primary",
        epoch=7,
        payload=AlertRaisedPayload(
            code=f"code-{i % 50}", severity=Severity.WARNING, message=f"disk latency {i} ms"
        ),
    )


async def fresh_stream(bus: Bus) -> None:
    await bus.js.delete_stream(EVENTS_STREAM)
    await bus.provision(load_stream_settings())


async def ours_sequential(bus: Bus, n: int) -> None:
    for i in range(n):
        await bus.publish(make_event(i))


async def ours_batched(bus: Bus, n: int, batch: int = 500) -> None:
    for start in range(0, n, batch):
        await bus.publish_many([make_event(i) for i in range(start, min(n, start + batch))])


def raw_payloads(n: int) -> list[tuple[str, bytes, dict[str, str]]]:
    """The same subjects, bytes and headers our client sends, prepared before timing."""
    out = []
    for i in range(n):
        e = make_event(i)
        out.append((event_subject(e.cluster, e.type), e.to_json(), event_headers(e)))
    return out


async def raw_sequential(bus: Bus, msgs: list[tuple[str, bytes, dict[str, str]]]) -> None:
    for subject, data, headers in msgs:
        await bus.js.publish(subject, data, headers=headers)


async def raw_batched(
    bus: Bus, msgs: list[tuple[str, bytes, dict[str, str]]], batch: int = 500
) -> None:
    for start in range(0, len(msgs), batch):
        futures = [
            await bus.js.publish_async(s, d, headers=h) for s, d, h in msgs[start : start + batch]
        ]
        await asyncio.gather(*futures)


async def consume(bus: Bus, n: int) -> None:
    done = asyncio.Event()
    count = 0

    async def handle(_: Event) -> None:
        nonlocal count
        count += 1
        if count >= n:
            done.set()

    consumer = DurableConsumer(
        bus, ConsumerOptions(durable=f"bench-{time.monotonic_ns()}", batch=256), handle
    )
    task = asyncio.create_task(consumer.run())
    await asyncio.wait_for(done.wait(), timeout=300)
    consumer.stop()
    await asyncio.wait_for(task, 10)


async def rate(bus: Bus, n: int, work: Callable[[], Awaitable[None]]) -> float:
    await fresh_stream(bus)
    t0 = time.perf_counter()
    await work()
    return n / (time.perf_counter() - t0)


async def measure(n: int, rounds: int, *, sync_always: bool = True) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {
        k: [] for k in ("ours_seq", "ours_batch", "raw_seq", "raw_batch", "consume")
    }
    seq_n = max(200, n // 10)  # one round trip per event: keep it short
    with tempfile.TemporaryDirectory(prefix="tandem-bench-") as tmp:
        server = start_secured_server(Path(tmp), name="bench", sync_always=sync_always)
        try:
            bus = await Bus.connect(load_bus_settings(servers=server.url), name="bench")
            await bus.provision(load_stream_settings())
            msgs = raw_payloads(n)
            for _ in range(rounds):  # interleaved, so drift on a noisy machine hits both sides
                results["raw_batch"].append(await rate(bus, n, lambda: raw_batched(bus, msgs)))
                results["ours_batch"].append(await rate(bus, n, lambda: ours_batched(bus, n)))
                results["raw_seq"].append(
                    await rate(bus, seq_n, lambda: raw_sequential(bus, msgs[:seq_n]))
                )
                results["ours_seq"].append(
                    await rate(bus, seq_n, lambda: ours_sequential(bus, seq_n))
                )
                await ours_batched(bus, n)  # fill the stream, then time reading it
                t0 = time.perf_counter()
                await consume(bus, n)
                results["consume"].append(n / (time.perf_counter() - t0))
            await bus.close()
        finally:
            server.stop()
    return results


def medians(results: dict[str, list[float]]) -> dict[str, float]:
    return {k: statistics.median(v) for k, v in results.items()}


def report(
    results: dict[str, list[float]], unsynced: dict[str, list[float]], n: int, quick: bool
) -> dict[str, object]:
    med = medians(results)
    ratio = med["raw_batch"] / med["ours_batch"]
    cpu = medians(unsynced)
    return {
        "benchmark": "bus",
        "quick": quick,
        "events": n,
        "rounds": len(results["consume"]),
        "metrics": {
            "events_per_s_batched": round(med["ours_batch"], 1),
            "raw_msgs_per_s_batched": round(med["raw_batch"], 1),
            "events_per_s_sequential": round(med["ours_seq"], 1),
            "raw_msgs_per_s_sequential": round(med["raw_seq"], 1),
            "consume_events_per_s": round(med["consume"], 1),
        },
        "ratios": {
            "raw_over_ours": round(ratio, 3),
            "raw_over_ours_sequential": round(med["raw_seq"] / med["ours_seq"], 3),
            # Without fsync per write the disk no longer hides the client's CPU cost.
            "raw_over_ours_no_fsync": round(cpu["raw_batch"] / cpu["ours_batch"], 3),
        },
        "no_fsync_metrics": {
            "events_per_s_batched": round(cpu["ours_batch"], 1),
            "raw_msgs_per_s_batched": round(cpu["raw_batch"], 1),
        },
        "target": {"raw_over_ours_max": TARGET_RATIO, "met": ratio <= TARGET_RATIO},
        "server": "embedded nats-server, file storage, sync_interval: always (as production)",
        "samples": {k: [round(x, 1) for x in v] for k, v in results.items()},
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small run (under a minute)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/bus.json"))
    args = parser.parse_args()
    n, rounds = (2_000, 3) if args.quick else (20_000, 5)
    durable = asyncio.run(measure(n, rounds))
    unsynced = asyncio.run(measure(n, rounds, sync_always=False))
    result = report(durable, unsynced, n, args.quick)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    m, r = result["metrics"], result["ratios"]
    sys.stdout.write(
        json.dumps({"metrics": m, "ratios": r, "target": result["target"]}, indent=2) + "\n"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
