"""ProcessControl with real processes: an application (and its stop command) running as its
own ``user`` under a root agent, and ``stale_files`` removed before a start only once the
previous instance is known dead."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from app_user import SYSTEM_PYTHON, app_user, shared_dir
from helpers import eventually
from tandem.agent.control import ApplicationConfig, AppState, ProcessControl

# Writes who it runs as, then runs until the stop file appears.
WHOAMI = """
import json, os, sys, time
out, stop = sys.argv[1], sys.argv[2]
me = {"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "egid": os.getegid(),
      "groups": sorted(os.getgroups()),
      **{k.lower(): os.environ.get(k) for k in ("HOME", "USER", "LOGNAME")}}
with open(out + ".tmp", "w") as f:
    json.dump(me, f)
os.rename(out + ".tmp", out)
print("ready", flush=True)
while not os.path.exists(stop):
    time.sleep(0.05)
"""
# The stop command: says who it runs as in the stop file, which ends the app.
STOPPER = "import os, sys; open(sys.argv[1], 'w').write(str(os.getuid()))"


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A folder only the test user may write, on a path it can reach."""
    user = app_user()
    with shared_dir("tandem-app-user-") as top:
        run = top / "run"
        run.mkdir(mode=0o700)
        os.chown(run, user.pw_uid, user.pw_gid)
        yield run


@pytest.fixture
def controls() -> Iterator[list[ProcessControl]]:
    made: list[ProcessControl] = []
    yield made
    for c in made:
        record = c.pid_file.read_text().split() if c.pid_file.exists() else None
        if record and not gone(int(record[0])):
            os.killpg(int(record[0]), signal.SIGKILL)


async def test_an_app_and_its_stop_command_run_as_its_user(
    tmp_path: Path, run_dir: Path, controls: list[ProcessControl]
) -> None:
    user = app_user()
    out, stop = run_dir / "whoami.json", run_dir / "stopped-by"
    app = ApplicationConfig(
        name="as-user",
        start=[SYSTEM_PYTHON, "-c", WHOAMI, str(out), str(stop)],
        stop=[SYSTEM_PYTHON, "-c", STOPPER, str(stop)],
        user=user.pw_name,
        log_file=tmp_path / "as-user.log",
        stop_grace_s=10,
    )
    c = ProcessControl(app, tmp_path / "state", settle_s=0.2)
    controls.append(c)
    status = await c.start()
    assert status.state is AppState.RUNNING and status.pid is not None
    await eventually(out.exists, what="the app to say who it runs as")
    me = json.loads(out.read_text())
    assert (me["uid"], me["euid"], me["gid"], me["egid"]) == (user.pw_uid,) * 2 + (user.pw_gid,) * 2
    # The user's own groups, none of the agent's (root's).
    assert me["groups"] == sorted(set(os.getgrouplist(user.pw_name, user.pw_gid)))
    assert (me["home"], me["user"], me["logname"]) == (user.pw_dir, user.pw_name, user.pw_name)
    assert psutil.Process(status.pid).uids().real == user.pw_uid

    stopped = await c.stop()
    assert stopped.state is AppState.STOPPED and "stop command" in stopped.message
    assert stop.read_text() == str(user.pw_uid), "the stop command runs as the app's user"
    assert gone(status.pid)


async def test_a_group_and_env_given_explicitly_win(
    tmp_path: Path, run_dir: Path, controls: list[ProcessControl]
) -> None:
    user = app_user()
    out, stop = run_dir / "whoami.json", run_dir / "stop"
    app = ApplicationConfig(
        name="as-group",
        start=[SYSTEM_PYTHON, "-c", WHOAMI, str(out), str(stop)],
        user=str(user.pw_uid),  # a numeric id works as well as a name
        group="nogroup",
        env={"HOME": "/nonexistent-home"},
    )
    c = ProcessControl(app, tmp_path / "state", settle_s=0.2)
    controls.append(c)
    await c.start()
    await eventually(out.exists, what="the app to say who it runs as")
    me = json.loads(out.read_text())
    nogroup = 65534
    assert (me["uid"], me["gid"], me["egid"]) == (user.pw_uid, nogroup, nogroup)
    assert me["groups"] == sorted(set(os.getgrouplist(user.pw_name, nogroup)))
    assert (me["home"], me["user"]) == ("/nonexistent-home", user.pw_name)
    stop.touch()
    assert (await c.stop()).state is AppState.STOPPED


# -- stale files ----------------------------------------------------------------------------

# Refuses to start while its lock file is there (as postgres does with postmaster.pid).
LOCKING_APP = """
import os, sys, time
if os.path.exists("postmaster.pid"):
    print("lock file postmaster.pid already exists", flush=True)
    sys.exit(1)
open("postmaster.pid", "w").write(str(os.getpid()))
print("ready", flush=True)
time.sleep(600)
"""


def locking_app(tmp_path: Path) -> ApplicationConfig:
    data = tmp_path / "pgdata"
    data.mkdir(exist_ok=True)
    return ApplicationConfig(
        name="db",
        start=[sys.executable, "-c", LOCKING_APP],
        cwd=data,
        stale_files=["postmaster.pid", "run/other.lock", str(tmp_path / "absent.lock")],
        log_file=tmp_path / "db.log",
    )


async def test_a_stale_lock_file_is_removed_before_a_start(
    tmp_path: Path, controls: list[ProcessControl], caplog: pytest.LogCaptureFixture
) -> None:
    app = locking_app(tmp_path)
    assert app.cwd is not None
    lock = app.cwd / "postmaster.pid"
    lock.write_text("4242\n")  # left by the dead instance of another node, replicated here
    (app.cwd / "run").mkdir()
    (app.cwd / "run" / "other.lock").write_text("x")
    c = ProcessControl(app, tmp_path / "state", settle_s=0.3)
    controls.append(c)
    with caplog.at_level(logging.INFO, logger="tandem.agent.control.process"):
        status = await c.start()
    assert status.state is AppState.RUNNING
    assert status.message == ("started; removed stale postmaster.pid, removed stale run/other.lock")
    assert not (app.cwd / "run" / "other.lock").exists()
    removals = [r.getMessage() for r in caplog.records if "removed stale" in r.getMessage()]
    assert len(removals) == 2 and "no process of it is recorded" in removals[0]
    # The one there now is the new instance's own.
    assert lock.read_text() == str(status.pid)

    # Running: a start removes nothing.
    again = await c.start()
    assert (again.message, again.pid) == ("already running", status.pid)
    assert lock.read_text() == str(status.pid)

    # Killed (the pid file of the agent still names it): known dead, so removed again.
    assert status.pid is not None
    os.killpg(status.pid, signal.SIGKILL)
    await eventually(lambda: gone(status.pid or 0), what="the app to die")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tandem.agent.control.process"):
        fresh = await c.start()
    assert fresh.state is AppState.RUNNING and fresh.pid != status.pid
    assert fresh.message == "started; removed stale postmaster.pid"
    assert any("has exited" in r.getMessage() for r in caplog.records)
    assert lock.read_text() == str(fresh.pid)
    assert (await c.stop()).state is AppState.STOPPED


async def test_without_stale_files_the_lock_blocks_the_start(tmp_path: Path) -> None:
    """What stale_files is for: the same app, with nothing configured, cannot start."""
    from tandem.agent.control import ControlError

    app = locking_app(tmp_path).model_copy(update={"stale_files": []})
    assert app.cwd is not None
    (app.cwd / "postmaster.pid").write_text("4242\n")
    with pytest.raises(ControlError, match="already exists"):
        await ProcessControl(app, tmp_path / "state", settle_s=5).start()
    assert (app.cwd / "postmaster.pid").read_text() == "4242\n"


async def test_a_stale_file_behind_a_symlink_out_of_cwd_is_kept(
    tmp_path: Path, controls: list[ProcessControl]
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "x.lock").write_text("not the app's")
    data = tmp_path / "data"
    data.mkdir()
    (data / "run").symlink_to(elsewhere)  # e.g. replicated with the data
    app = ApplicationConfig(
        name="linked",
        start=[sys.executable, "-c", "import time; time.sleep(600)"],
        cwd=data,
        stale_files=["run/x.lock"],
    )
    c = ProcessControl(app, tmp_path / "state", settle_s=0.2)
    controls.append(c)
    status = await c.start()
    assert status.message == "started"
    assert (elsewhere / "x.lock").exists()
    await c.stop()
