"""The ``tandem`` command against a real nats-server, run as a user would (subprocesses)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from helpers import alert
from tandem.events.bus import Bus
from tandem.events.catalog import ServiceStarted
from tandem.events.catalog.services import ServiceStartedPayload
from tandem.events.embedded import NatsServer

TANDEM = [sys.executable, "-m", "tandem.cli"]


def tandem(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TANDEM, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def wait_for_line(path: Path, text: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and text in path.read_text():
            return
        time.sleep(0.1)
    raise AssertionError(
        f"{text!r} never appeared in {path}:\n{path.read_text() if path.exists() else ''}"
    )


def test_version_names_the_embedded_server() -> None:
    out = tandem("version")
    assert out.returncode == 0
    assert "tandem 0.1.0" in out.stdout and "nats-server: v2." in out.stdout


def test_a_service_announces_itself_and_records_why_it_stopped(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    log = tmp_path / "orchestrator.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*TANDEM, "run", "orchestrator", "--bus", nats_server.url],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_line(log, "orchestrator started")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0

    tail = tandem(
        "events",
        "tail",
        "--bus",
        nats_server.url,
        "--cluster",
        "tandem",
        "--history",
        "1000",
        "--idle-timeout",
        "2",
    )
    assert tail.returncode == 0, tail.stderr
    lines = [
        line
        for line in tail.stdout.splitlines()
        if f"pid={proc.pid}" in line or "reason=stopped on request" in line
    ]
    assert any("tandem/orchestrator  ServiceStarted" in line for line in lines), tail.stdout
    assert any(
        "ServiceStopped" in line and "reason=stopped on request" in line for line in lines
    ), tail.stdout


async def test_tail_prints_one_decoded_line_per_event(bus: Bus, nats_server: NatsServer) -> None:
    started = ServiceStarted(
        cluster="tandem",
        node="orchestrator",
        payload=ServiceStartedPayload(service="orchestrator", version="9.9", host="h", pid=1),
    )
    await bus.publish(alert())
    await bus.publish(started)
    args = [
        "events",
        "tail",
        "--bus",
        nats_server.url,
        "--count",
        "1",
        "--type",
        "ServiceStarted",
        "--idle-timeout",
        "10",
    ]
    tail = await asyncio.to_thread(tandem, *args)
    assert tail.returncode == 0, tail.stderr
    [line] = tail.stdout.splitlines()
    assert line.endswith(
        "tandem/orchestrator  ServiceStarted  e0  "
        "service=orchestrator version=9.9 host=h pid=1 listen={}"
    )
    assert line.startswith(started.occurred_at.strftime("%Y-%m-%dT%H:%M:%S"))


def test_an_unknown_service_is_refused() -> None:
    out = tandem("run", "teleporter")
    assert out.returncode == 2
    assert "unknown service 'teleporter'" in out.stderr and "orchestrator" in out.stderr


def test_a_node_service_without_its_cluster_names_the_missing_field(
    nats_server: NatsServer,
) -> None:
    out = tandem(
        "run",
        "agent",
        "--bus",
        nats_server.url,
        env={"TANDEM_AGENT_CLUSTER": "", "TANDEM_AGENT_NODE": ""},
    )
    assert out.returncode == 2
    assert "TANDEM_AGENT_CLUSTER" in out.stderr and "cluster name" in out.stderr


def test_a_bad_cluster_filter_is_refused(nats_server: NatsServer) -> None:
    out = tandem("events", "tail", "--bus", nats_server.url, "--cluster", "Not Valid")
    assert out.returncode == 2 and "cluster name 'Not Valid' is invalid" in out.stderr


def test_an_unreachable_bus_is_a_clear_error() -> None:
    from tandem.events.embedded import free_port

    out = tandem("events", "tail", "--bus", f"nats://127.0.0.1:{free_port()}", "--count", "1")
    assert out.returncode == 3 and "cannot reach the bus" in out.stderr
