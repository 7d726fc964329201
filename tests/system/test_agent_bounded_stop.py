"""SIGTERM always ends the node agent within its stop deadline (issue 16 item 4), here with
an application that ignores SIGTERM and a stop grace far longer than the deadline: the agent
says what it was doing when the deadline passed and exits with code 1 instead of waiting
the grace out. A real agent process on a real nats-server."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from agent_rig import node_toml, read_pid, write_agent
from helpers import eventually
from tandem.events.embedded import NatsServer

pytestmark = pytest.mark.system

#: Ignores SIGTERM; only SIGKILL ends it.
STUBBORN = (
    "import pathlib, signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "pathlib.Path(sys.argv[1]).touch(); time.sleep(3600)"
)


@pytest.mark.timeout(180)
async def test_sigterm_ends_the_agent_at_its_deadline_with_a_hung_application(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    app = f"""
[[applications]]
name = "stubborn"
start = {[sys.executable, "-c", STUBBORN, str(tmp_path / "ignoring")]!r}
stop_grace_s = 600
pid_file = "{tmp_path / "stubborn.pid"}"

[shutdown]
deadline_s = 3

[fencing]
# The node guard would kill the application itself once the stopping agent's lease
# deadline passes: without it, only the stop deadline ends the wait.
guard = false
""".replace("'", '"')
    agent = write_agent(
        tmp_path, "n1", node_toml("stop", "n1", tmp_path / "state", nats_server.url) + app
    )
    agent.start()
    try:
        await eventually(  # its SIGTERM handler is in place (the pid file comes earlier)
            lambda: (tmp_path / "ignoring").exists(), timeout=60, what="the application to start"
        )
        app_pid = read_pid(tmp_path / "stubborn.pid")
        agent.signal(signal.SIGTERM)
        assert agent.proc is not None
        try:
            # Far less than the application's 600 s grace: only the deadline ends it so soon.
            code = agent.proc.wait(120)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the agent outlived its stop deadline:\n{agent.tail()}") from None
        assert code == 1, agent.tail()
        log = agent.log.read_text()
        assert "did not stop within 3s of SIGTERM (stopping the applications" in log, agent.tail()
    finally:
        agent.stop()
        for pid in {read_pid(tmp_path / "stubborn.pid"), locals().get("app_pid")} - {None}:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)  # type: ignore[arg-type]
