"""`tandem up` as a user runs it: embedded bus, every service and the demo pair, then Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.system


def wait_for(path: Path, timeout: float = 60) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return json.loads(path.read_text())  # type: ignore[no-any-return]
        except (OSError, ValueError):
            time.sleep(0.2)
    raise AssertionError(f"{path} was never written")


def tail_cmd(event_type: str, count: int) -> list[str]:
    return [
        sys.executable, "-m", "tandem.cli", "events", "tail", "--type", event_type,
        "--count", str(count), "--history", "100", "--idle-timeout", "60",
    ]  # fmt: skip


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_up_starts_everything_and_ctrl_c_stops_everything(tmp_path: Path, nats_binary: str) -> None:
    env = {**os.environ, "TANDEM_STATE_DIR": str(tmp_path / "state"), "COLUMNS": "200"}
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tandem.cli",
            "up",
            "--nats-port",
            "0",
            "--store-dir",
            str(tmp_path / "store"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        state = wait_for(tmp_path / "state" / "tandem" / "up.json")
        assert state["bus_url"].startswith("nats://127.0.0.1:")
        assert set(state["services"]) == {
            "orchestrator",
            "dns_updater",
            "vmware_bridge",
            "agent-primary",
            "agent-secondary",
        }
        # The state file holds the run's API tokens: owner only. The orchestrator has them
        # from its tokens file, hashed (`tandem status` below gets in with them).
        assert (tmp_path / "state" / "tandem" / "up.json").stat().st_mode & 0o777 == 0o600
        tokens_file = tmp_path / "store" / "orchestrator" / "api-tokens"
        assert tokens_file.stat().st_mode & 0o777 == 0o600
        assert state["operator_token"] not in tokens_file.read_text()

        # No --bus: the tail finds the bus of the running `tandem up` by itself.
        tail = subprocess.run(
            [
                sys.executable,
                "-m",
                "tandem.cli",
                "events",
                "tail",
                "--count",
                "9",
                "--type",
                "ServiceStarted",
                "--history",
                "100",
                "--idle-timeout",
                "60",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert tail.returncode == 0, tail.stderr
        started = {(line.split()[1], line.split()[4]) for line in tail.stdout.splitlines()}
        assert started == {
            ("tandem/orchestrator", "service=orchestrator"),
            ("tandem/dns-updater", "service=dns_updater"),
            ("tandem/vmware-bridge", "service=vmware_bridge"),
            *{
                (f"demo/{n}", f"service={s}")
                for n in ("primary", "secondary")
                for s in ("agent", "replicator", "monitor")
            },
        }
        # The demo pair replicates: a file written on the Active appears on the Passive.
        sides = subprocess.run(
            [*tail_cmd("ReplicationStarted", 2)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert sides.returncode == 0 and len(sides.stdout.splitlines()) == 2, sides.stdout
        store = Path(state["store_dir"])
        (store / "demo/primary/data/hello.txt").write_text("replicated by Tandem")
        replica = store / "demo/secondary/data/hello.txt"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (
            replica.exists() and replica.read_text() == "replicated by Tandem"
        ):
            time.sleep(0.1)
        assert replica.read_text() == "replicated by Tandem"
        # By now the orchestrator serves: `tandem status` finds its URL and token by itself.
        status = subprocess.run(
            [sys.executable, "-m", "tandem.cli", "status"],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert status.returncode == 0, status.stdout + status.stderr
    finally:
        up.send_signal(signal.SIGINT)
        out, _ = up.communicate(timeout=60)
    assert up.returncode == 0, out
    assert "Tandem is up" in out and "stopped." in out
    # Its output went to a pipe, not a terminal: the tokens are not in it, nor in any log.
    assert "not shown (the output is not a terminal)" in out
    logs = [p.read_text(errors="replace") for p in (tmp_path / "store").rglob("*.log")]
    assert logs
    for token in (state["operator_token"], state["viewer_token"]):
        assert token not in out
        assert all(token not in log for log in logs)
    for name, pid in state["services"].items():
        assert not alive(pid), f"{name} (pid {pid}) is still running"
    assert not (tmp_path / "state" / "tandem" / "up.json").exists()
