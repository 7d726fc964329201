"""ProcessControl with real processes: start, idempotence, stop, forced kill, failed start,
adoption after an agent restart, and refusal of a pid file whose pid was reused."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from helpers import eventually
from tandem.agent.control import (
    ApplicationConfig,
    AppState,
    ControlError,
    ProcessControl,
    procfiles,
)

SLEEPER = "import time; print('ready', flush=True); time.sleep(600)"
IGNORES_TERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "print('ready', flush=True); time.sleep(600)"
)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def config(tmp_path: Path, code: str = SLEEPER, **kw: object) -> ApplicationConfig:
    fields: dict[str, object] = {
        "name": "sleeper",
        "start": [sys.executable, "-c", code],
        "log_file": tmp_path / "sleeper.log",
        **kw,
    }
    return ApplicationConfig.model_validate(fields)


def control(app: ApplicationConfig, tmp_path: Path, settle_s: float = 0.2) -> ProcessControl:
    return ProcessControl(app, tmp_path / "state", settle_s=settle_s)


def logged_ready(app: ApplicationConfig) -> bool:
    assert app.log_file is not None
    return app.log_file.exists() and "ready" in app.log_file.read_text()


@pytest.fixture
def started() -> Iterator[list[ProcessControl]]:
    """Controls whose application is stopped at the end of the test, whatever happened."""
    controls: list[ProcessControl] = []
    yield controls
    for c in controls:
        record = c.pid_file.read_text().split() if c.pid_file.exists() else None
        if record and not gone(int(record[0])):
            psutil.Process(int(record[0])).kill()


async def test_start_status_stop(tmp_path: Path, started: list[ProcessControl]) -> None:
    c = control(config(tmp_path), tmp_path)
    started.append(c)
    assert (await c.status()).state is AppState.STOPPED
    first = await c.start()
    assert first.state is AppState.RUNNING and first.pid is not None
    assert not gone(first.pid)
    assert c.pid_file.read_text().split()[0] == str(first.pid)

    again = await c.start()
    assert (again.state, again.pid, again.message) == (
        AppState.RUNNING,
        first.pid,
        "already running",
    )
    assert (await c.status()).pid == first.pid

    stopped = await c.stop()
    assert stopped.state is AppState.STOPPED
    assert "SIGTERM" in stopped.message
    assert gone(first.pid)
    assert not c.pid_file.exists()
    assert (await c.status()).state is AppState.STOPPED
    assert "already stopped" in (await c.stop()).message


async def test_a_process_ignoring_sigterm_is_killed(
    tmp_path: Path, started: list[ProcessControl]
) -> None:
    app = config(tmp_path, IGNORES_TERM, stop_grace_s=0.5)
    c = control(app, tmp_path)
    started.append(c)
    pid = (await c.start()).pid
    assert pid is not None
    # Only once the handler is installed does the test exercise the forced path.
    await eventually(lambda: logged_ready(app), what="the SIGTERM handler to be installed")
    stopped = await c.stop()
    assert stopped.state is AppState.STOPPED
    assert "killed with SIGKILL" in stopped.message
    assert gone(pid)


async def test_a_start_command_that_exits_at_once_fails_with_its_code(tmp_path: Path) -> None:
    app = config(tmp_path, "import sys; print('cannot open database', flush=True); sys.exit(3)")
    # A long settle: the command's exit ends it early, so this costs no time.
    c = control(app, tmp_path, settle_s=60)
    with pytest.raises(ControlError) as info:
        await c.start()
    assert "exit code 3" in info.value.message
    assert "cannot open database" in info.value.message
    assert not c.pid_file.exists()
    assert (await c.status()).state is AppState.STOPPED


async def test_a_missing_program_fails_clearly(tmp_path: Path) -> None:
    app = ApplicationConfig(name="ghost", start=[str(tmp_path / "no-such-program")])
    with pytest.raises(ControlError, match=r"cannot run .*no-such-program"):
        await control(app, tmp_path).start()


async def test_a_configured_stop_command_is_used(
    tmp_path: Path, started: list[ProcessControl]
) -> None:
    pid_file = tmp_path / "sleeper.pid"
    # The application's own stop tool, here one that signals the pid the agent recorded.
    stopper = (
        "import os, signal, sys; os.kill(int(open(sys.argv[1]).read().split()[0]), signal.SIGINT)"
    )
    app = config(tmp_path, pid_file=pid_file, stop=[sys.executable, "-c", stopper, str(pid_file)])
    c = control(app, tmp_path)
    started.append(c)
    pid = (await c.start()).pid
    assert pid is not None
    # Stopped once it runs its code: a SIGINT while the interpreter still starts up can be
    # lost on a loaded machine (CI: SIGKILL after the grace), which is not what is tested.
    await eventually(lambda: logged_ready(app), 30, "the app ready")
    stopped = await c.stop()
    assert stopped.state is AppState.STOPPED and "stop command" in stopped.message
    assert gone(pid)


# A first agent, in a process of its own: starts the app, prints its pid and exits.
FIRST_AGENT = """
import asyncio, sys
from pathlib import Path
from tandem.agent.control import ApplicationConfig, ProcessControl
app = ApplicationConfig.model_validate_json(sys.argv[1])
status = asyncio.run(ProcessControl(app, Path(sys.argv[2]), settle_s=0.2).start())
sys.stdout.write(str(status.pid))
"""


async def test_a_running_app_is_adopted_after_an_agent_restart(
    tmp_path: Path, started: list[ProcessControl]
) -> None:
    app = config(tmp_path)
    after = control(app, tmp_path)
    started.append(after)
    first = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        FIRST_AGENT,
        app.model_dump_json(),
        str(tmp_path / "state"),
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(first.communicate(), 60)
    assert first.returncode == 0
    pid = int(out)
    assert not gone(pid), "the app outlives the agent that started it"

    # The restarted agent: a new control on the same pid file.
    status = await after.status()
    assert (status.state, status.pid) == (AppState.RUNNING, pid)
    again = await after.start()
    assert (again.pid, again.message) == (pid, "already running")
    assert (await after.stop()).state is AppState.STOPPED
    assert gone(pid)


@pytest.fixture
def other() -> Iterator[subprocess.Popen[bytes]]:
    """A process unrelated to the app."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    yield proc
    proc.kill()
    proc.wait(timeout=10)


async def test_a_reused_pid_is_not_taken_for_the_app(
    tmp_path: Path, started: list[ProcessControl], other: subprocess.Popen[bytes]
) -> None:
    c = control(config(tmp_path), tmp_path)
    started.append(c)
    # The recorded pid now belongs to another process: same pid, different creation time.
    created = psutil.Process(other.pid).create_time()
    c.pid_file.parent.mkdir(parents=True)
    c.pid_file.write_text(f"{other.pid} {created - 1000:.6f}\n")

    status = await c.status()
    assert status.state is AppState.STOPPED and "another process" in status.message
    assert "already stopped" in (await c.stop()).message
    assert other.poll() is None, "stop must not touch a process that is not the app"

    c.pid_file.write_text(f"{other.pid} {created - 1000:.6f}\n")
    fresh = await c.start()
    assert fresh.state is AppState.RUNNING and fresh.pid not in (None, other.pid)
    assert other.poll() is None
    await c.stop()


async def test_the_app_is_known_by_its_start_in_ticks_not_by_the_wall_clock(
    tmp_path: Path, started: list[ProcessControl], other: subprocess.Popen[bytes]
) -> None:
    """A stepped clock moves psutil's creation time (boot time + ticks): a chaos run saw 9 s,
    the live app was taken for a reused pid, called "already stopped" and left serving."""
    c = control(config(tmp_path), tmp_path)
    started.append(c)
    created = psutil.Process(other.pid).create_time()
    ticks = procfiles.start_ticks(other.pid)
    assert ticks is not None
    c.pid_file.parent.mkdir(parents=True)

    # The wall clock was stepped 9 s since the record: the same start in ticks, so the same
    # process.
    c.pid_file.write_text(f"{other.pid} {created - 9:.6f} {ticks}\n")
    assert (await c.status()).state is AppState.RUNNING

    # A different start in ticks is another process, whatever the creation time says.
    c.pid_file.write_text(f"{other.pid} {created:.6f} {ticks + 1}\n")
    status = await c.status()
    assert status.state is AppState.STOPPED and "another process" in status.message
    assert other.poll() is None


async def test_a_started_app_is_recorded_with_its_start_in_ticks(
    tmp_path: Path, started: list[ProcessControl]
) -> None:
    c = control(config(tmp_path), tmp_path)
    started.append(c)
    status = await c.start()
    record = procfiles.read_record(c.pid_file)
    assert record is not None and status.pid == record.pid
    assert record.start_ticks == procfiles.start_ticks(record.pid)
