"""``tandem events tail`` against a real nats-server, run as a user would (issue 18 item 9):
newest last, ``--count`` counting from the end, filters before the limits, unknown types
refused, ``--json`` and ``--full``."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

from helpers import alert
from tandem.events.bus import Bus
from tandem.events.catalog import ServiceStarted
from tandem.events.catalog.services import ServiceStartedPayload
from tandem.events.embedded import NatsServer

TANDEM = [sys.executable, "-m", "tandem.cli"]


def tandem(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TANDEM, *args], capture_output=True, text=True, timeout=90, env=dict(os.environ)
    )


def started(n: int, host: str = "h") -> ServiceStarted:
    payload = ServiceStartedPayload(service="orchestrator", version=f"{n}.0", host=host, pid=n)
    return ServiceStarted(cluster="tandem", node="orchestrator", payload=payload)


async def test_tail_counts_from_the_end_after_filtering(bus: Bus, nats_server: NatsServer) -> None:
    # 5 ServiceStarted among 40 alerts: the last 10 stream entries hold only one of them.
    for n in range(5):
        await bus.publish(started(n))
        for k in range(8):
            await bus.publish(alert(n=n * 8 + k))
    await bus.publish(started(5, host="x" * 100))
    base = ["events", "tail", "--bus", nats_server.url, "--idle-timeout", "1"]

    # --count 1: the newest, not the oldest of the last 10.
    newest = await asyncio.to_thread(tandem, *base, "--type", "ServiceStarted", "--count", "1")
    assert newest.returncode == 0, newest.stderr
    [line] = newest.stdout.splitlines()
    assert "version=5.0" in line and "host=" + "x" * 57 + "..." in line

    # --history K: the last K matching events, oldest first and newest last.
    last3 = await asyncio.to_thread(tandem, *base, "--type", "ServiceStarted", "--history", "3")
    assert last3.returncode == 0, last3.stderr
    versions = [w for line in last3.stdout.splitlines() for w in line.split() if "version=" in w]
    assert versions == ["version=3.0", "version=4.0", "version=5.0"]

    # --count N with fewer matching: all of them (then the idle timeout ends the wait).
    many = await asyncio.to_thread(tandem, *base, "--type", "ServiceStarted", "--count", "50")
    assert many.returncode == 0 and len(many.stdout.splitlines()) == 6, many.stdout

    # --json: one object per line, the event as stored; --full: nothing shortened.
    as_json = await asyncio.to_thread(
        tandem, *base, "--type", "ServiceStarted", "--count", "2", "--json"
    )
    assert as_json.returncode == 0, as_json.stderr
    events = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [e["payload"]["version"] for e in events] == ["4.0", "5.0"]
    assert events[1]["payload"]["host"] == "x" * 100 and events[0]["seq"] < events[1]["seq"]
    full = await asyncio.to_thread(tandem, *base, "--cluster", "tandem", "--count", "1", "--full")
    assert "host=" + "x" * 100 + " " in full.stdout, full.stdout

    # No filter: the last entries of the stream, newest last.
    unfiltered = await asyncio.to_thread(tandem, *base, "--count", "2")
    lines = unfiltered.stdout.splitlines()
    assert len(lines) == 2 and "AlertRaised" in lines[0] and "ServiceStarted" in lines[1]


def test_an_unknown_type_is_refused_naming_close_ones(nats_server: NatsServer) -> None:
    out = tandem("events", "tail", "--bus", nats_server.url, "--type", "RoleChange")
    assert out.returncode == 2, out
    assert "unknown event type 'RoleChange': did you mean RoleChanged" in out.stderr
    lower = tandem("events", "tail", "--bus", nats_server.url, "--type", "servicestarted")
    assert lower.returncode == 2 and "did you mean ServiceStarted" in lower.stderr
