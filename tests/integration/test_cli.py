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
REPO = Path(__file__).resolve().parents[2]


def tandem(
    *args: str,
    env: dict[str, str] | None = None,
    unset: tuple[str, ...] = (),
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in unset}
    return subprocess.run(
        [*TANDEM, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**base, **(env or {})},
    )


def node_overrides() -> tuple[str, ...]:
    """The TANDEM_NODE_* variables of this environment: they would override a config file."""
    return tuple(k for k in os.environ if k.upper().startswith("TANDEM_NODE_"))


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


def test_a_node_agent_without_its_config_names_the_missing_variable(
    nats_server: NatsServer,
) -> None:
    out = tandem("run", "agent", "--bus", nats_server.url, unset=("TANDEM_AGENT_CONFIG",))
    assert out.returncode == 2, out.stderr
    assert "TANDEM_AGENT_CONFIG" in out.stderr and "Field required" in out.stderr


def test_a_bad_node_config_names_its_file_and_field(tmp_path: Path) -> None:
    config = tmp_path / "node.toml"
    config.write_text(
        'cluster = "demo"\nnode = "Primary"\nidentity = "primary"\nstate_dir = "/tmp/x"\n'
    )
    out = tandem("agent", "--config", str(config), unset=node_overrides())
    assert out.returncode == 2, out.stderr
    assert str(config) in out.stderr and "node name 'Primary' is invalid" in out.stderr
    [line] = [line for line in out.stderr.splitlines() if "'Primary'" in line]
    assert line.strip().startswith("node (env TANDEM_NODE_NODE): "), out.stderr


def test_the_example_node_config_passes_its_check() -> None:
    example = REPO / "examples" / "node.toml"
    out = tandem("agent", "--config", str(example), "--check", unset=node_overrides())
    assert out.returncode == 0, out.stderr
    assert '"cluster": "billing"' in out.stdout


def test_a_bad_cluster_filter_is_refused(nats_server: NatsServer) -> None:
    out = tandem("events", "tail", "--bus", nats_server.url, "--cluster", "Not Valid")
    assert out.returncode == 2 and "cluster name 'Not Valid' is invalid" in out.stderr


def test_an_unreachable_bus_is_a_clear_error() -> None:
    from tandem.events.embedded import free_port

    out = tandem("events", "tail", "--bus", f"nats://127.0.0.1:{free_port()}", "--count", "1")
    assert out.returncode == 3 and "cannot reach the bus" in out.stderr
