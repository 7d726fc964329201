"""The node guard as a real process: it hides the node and kills the applications when the
deadline passes or the agent's pipe closes without a stop, never when the agent stops
cleanly or the node does not serve; it reports what it did; one guard per node at a time;
the watchdog sequence (against a stand-in device file: a real one would reboot the machine).

The applications are real processes in their own sessions with pid files, as the agent's
process control starts them; the identity is the loopback stand-in (its state file), since
the lan identity's hide is tested for real in network namespaces (tests/system)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tandem.agent.control import procfiles
from tandem.agent.guard.link import GuardLink, _readline
from tandem.agent.guard.plan import FencePlan, GuardedApp, GuardedIdentity, boot_clock


def _plan(tmp_path: Path, watchdog: str | None = None) -> FencePlan:
    return FencePlan(
        cluster="c1",
        node="n1",
        identity=GuardedIdentity(kind="loopback", state_file=str(tmp_path / "identity.json")),
        apps=[GuardedApp(name="app", control="process", pid_file=str(tmp_path / "app.pid"))],
        report_dir=str(tmp_path / "reports"),
        lock_file=str(tmp_path / "guard.lock"),
        watchdog=watchdog,
        watchdog_timeout_s=7,
    )


def _start_app(tmp_path: Path) -> subprocess.Popen[bytes]:
    child = subprocess.Popen(["sleep", "600"], start_new_session=True)
    created = procfiles.create_time(child.pid) or 0.0
    procfiles.write_record(tmp_path / "app.pid", procfiles.Record(child.pid, created))
    (tmp_path / "identity.json").write_text('{"address": "127.0.0.1"}')
    return child


def _gone(child: subprocess.Popen[bytes], timeout: float = 10.0) -> bool:
    try:
        child.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        return False


def _wait_for(check, timeout: float = 10.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def link(tmp_path: Path):  # type: ignore[no-untyped-def]
    links: list[GuardLink] = []

    def make(watchdog: str | None = None) -> GuardLink:
        g = GuardLink(_plan(tmp_path, watchdog), tmp_path / "plan.json")
        g._start()
        links.append(g)
        return g

    yield make
    for g in links:
        if g.proc is not None and g.proc.poll() is None:
            g.proc.kill()
            g.proc.wait(5)


def test_deadline_passed_hides_and_kills_and_reports(tmp_path: Path, link) -> None:  # type: ignore[no-untyped-def]
    child = _start_app(tmp_path)
    guard = link()
    assert guard.send(boot_clock() + 0.3)
    assert _gone(child), "the guard killed the application when the deadline passed"
    assert not (tmp_path / "identity.json").exists()
    assert _wait_for(lambda: list((tmp_path / "reports").glob("fenced-*.json")))
    reports = guard.take_reports()
    assert len(reports) == 1
    assert "deadline passed" in reports[0]["reason"]
    assert any("killed process group" in a for a in reports[0]["actions"])
    assert reports[0]["late_s"] >= 0
    assert guard.exit_code() is None, "the guard goes on, waiting to be armed again"


def test_a_renewed_deadline_keeps_the_node_serving(tmp_path: Path, link) -> None:  # type: ignore[no-untyped-def]
    child = _start_app(tmp_path)
    guard = link()
    for _ in range(10):
        assert guard.send(boot_clock() + 0.5)
        time.sleep(0.1)
    assert child.poll() is None
    assert guard.send(None)  # the node no longer serves: nothing to guard
    time.sleep(0.8)
    assert child.poll() is None
    assert guard.take_reports() == []
    child.kill()
    child.wait()


def test_agent_killed_the_guard_fences_at_once_and_exits(tmp_path: Path, link) -> None:  # type: ignore[no-untyped-def]
    child = _start_app(tmp_path)
    guard = link()
    guard.send(boot_clock() + 600)  # far away: only the closed pipe can trigger it
    assert guard.proc is not None and guard.proc.stdin is not None
    guard.proc.stdin.close()  # what the agent's death does to the pipe
    assert _gone(child)
    assert guard.proc.wait(10) == 0
    (report,) = guard.take_reports()
    assert report["reason"] == "the agent exited without stopping cleanly"


def test_a_clean_stop_fences_nothing(tmp_path: Path, link) -> None:  # type: ignore[no-untyped-def]
    child = _start_app(tmp_path)
    guard = link()
    guard.send(None)
    asyncio.run(guard.stop())
    assert child.poll() is None
    assert guard.take_reports() == []
    child.kill()
    child.wait()


def test_sigterm_while_serving_fences(tmp_path: Path, link) -> None:  # type: ignore[no-untyped-def]
    child = _start_app(tmp_path)
    guard = link()
    guard.send(boot_clock() + 600)
    assert guard.proc is not None
    time.sleep(0.2)
    guard.proc.terminate()
    assert _gone(child)
    assert guard.proc.wait(10) == 0


def test_a_second_guard_waits_for_the_first(tmp_path: Path, link) -> None:  # type: ignore[no-untyped-def]
    first = link()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tandem.agent.guard", str(tmp_path / "plan.json")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert _readline(proc.stdout, 1.0) == b"", "not ready while the first holds the lock"
        asyncio.run(first.stop())
        assert _readline(proc.stdout, 10.0) == b"ready\n"
    finally:
        proc.kill()
        proc.wait(5)


def test_watchdog_is_fed_while_serving_and_closed_with_the_magic_character(
    tmp_path: Path, link
) -> None:  # type: ignore[no-untyped-def]
    device = tmp_path / "watchdog"
    device.write_bytes(b"")
    guard = link(str(device))
    guard.send(boot_clock() + 600)
    assert _wait_for(lambda: len(device.read_bytes()) >= 3)
    guard.send(None)
    assert _wait_for(lambda: device.read_bytes().endswith(b"V"))
    written = device.read_bytes()
    assert set(written[:-1]) == {ord("1")}, written  # keepalives, then the magic close
    asyncio.run(guard.stop())
    assert device.read_bytes() == written  # nothing after the close


def test_report_is_json_per_fence(tmp_path: Path, link) -> None:  # type: ignore[no-untyped-def]
    _start_app(tmp_path)
    guard = link()
    guard.send(boot_clock() + 0.1)
    assert _wait_for(lambda: list((tmp_path / "reports").glob("fenced-*.json")))
    path = next((tmp_path / "reports").glob("fenced-*.json"))
    data = json.loads(path.read_text())
    assert set(data) == {"reason", "actions", "fenced_at", "late_s", "took_s", "epoch"}


AGENT_STAND_IN = """
import sys, time
from pathlib import Path
from tandem.agent.guard.link import GuardLink
from tandem.agent.guard.plan import FencePlan, boot_clock
plan = FencePlan.model_validate_json(Path(sys.argv[1]).read_text())
link = GuardLink(plan, Path(sys.argv[2]))
link._start()
link.send(boot_clock() + 0.3)
print("armed", flush=True)
time.sleep(60)  # as a frozen agent would: it never renews
"""


def test_a_frozen_agent_holding_the_loopback_port_is_killed(tmp_path: Path) -> None:
    """The loopback stand-in's public port is a socket of the agent itself: hiding it means
    killing the agent (its supervisor restarts it, hidden). A stand-in agent process here."""
    child = _start_app(tmp_path)
    plan = _plan(tmp_path).model_copy(
        update={
            "identity": GuardedIdentity(
                kind="loopback", state_file=str(tmp_path / "identity.json"), held_by_agent=True
            )
        }
    )
    (tmp_path / "in.json").write_text(plan.model_dump_json())
    agent = subprocess.Popen(
        [sys.executable, "-c", AGENT_STAND_IN, str(tmp_path / "in.json"), str(tmp_path / "p.json")],
        stdout=subprocess.PIPE,
    )
    try:
        assert _readline(agent.stdout, 20) == b"armed\n"
        assert agent.wait(20) == -9, "the guard SIGKILLed the agent"
        assert _gone(child)
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
