"""ServiceControl without real services: configuration, start order, and the systemctl /
sc.exe commands issued and their output parsed, through a recording fake runner.

There is no Windows host (and no systemd as PID 1) here: the Windows and systemd tests assert
the exact argv issued and feed real-looking sc.exe / systemctl output captured from such hosts.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from recording_runner import RecordingRunner, Reply
from tandem.agent.control import (
    ApplicationConfig,
    AppState,
    ControlError,
    ProcessControl,
    SystemdControl,
    WindowsServiceControl,
    dependency_order,
    make_control,
)
from tandem.agent.control.runner import Runner, run_command
from tandem.agent.control.systemd import parse_show
from tandem.agent.control.windows import parse_query


def app(**kw: object) -> ApplicationConfig:
    fields: dict[str, object] = {"name": "db", "start": ["/bin/true"], **kw}
    return ApplicationConfig.model_validate(fields)


# --- configuration -----------------------------------------------------------------------------


def test_a_process_app_needs_a_start_command() -> None:
    with pytest.raises(ValidationError, match="field 'start' is required when control='process'"):
        ApplicationConfig(name="db")


def test_systemd_and_windows_apps_need_a_unit() -> None:
    with pytest.raises(ValidationError, match="field 'unit' is required when control='systemd'"):
        ApplicationConfig(name="db", control="systemd")
    with pytest.raises(ValidationError, match="field 'unit' is required when control='windows'"):
        ApplicationConfig(name="db", control="windows")


def test_process_fields_are_refused_for_a_unit() -> None:
    with pytest.raises(ValidationError, match=r"field.s. start, log_file apply only to control="):
        ApplicationConfig(
            name="db", control="systemd", unit="db.service", start=["x"], log_file=Path("/l")
        )
    with pytest.raises(ValidationError, match="field 'unit' applies only to control="):
        app(unit="db.service")


@pytest.mark.parametrize("name", ["", "a b", "x" * 65, "../etc", "é"])
def test_bad_names_are_refused_naming_the_field(name: str) -> None:
    with pytest.raises(ValidationError) as info:
        app(name=name)
    assert info.value.errors()[0]["loc"] == ("name",)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("start", []),
        ("start", [""]),
        ("stop", []),
        ("stop_signal", "KILL"),
        ("stop_grace_s", 0),
        ("start_timeout_s", -1),
        ("env", {"A=B": "x"}),
        ("restart", {"tries": -1}),
        ("surprise", 1),
    ],
)
def test_bad_fields_are_refused_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ValidationError) as info:
        app(**{field: value})
    assert info.value.errors()[0]["loc"][0] == field


def test_bad_unit_names_are_refused() -> None:
    with pytest.raises(ValidationError, match="not a valid systemd name"):
        ApplicationConfig(name="db", control="systemd", unit="--now")
    with pytest.raises(ValidationError, match="not a valid windows name"):
        ApplicationConfig(name="db", control="windows", unit='my"svc')


def test_depends_on_itself_is_refused() -> None:
    with pytest.raises(ValidationError, match="'depends_on' lists the application itself"):
        app(depends_on=["db"])


def test_defaults_and_restart_policy_are_kept() -> None:
    cfg = app(restart={"tries": 5, "delay_s": 0.5})
    assert (cfg.control, cfg.stop_signal, cfg.stop_grace_s, cfg.start_timeout_s) == (
        "process",
        "TERM",
        10,
        30,
    )
    assert (cfg.restart.tries, cfg.restart.delay_s) == (5, 0.5)
    with pytest.raises(ValidationError):
        cfg.name = "other"  # type: ignore[misc]


def test_make_control_picks_the_implementation(tmp_path: Path) -> None:
    proc = make_control(app(), tmp_path)
    assert isinstance(proc, ProcessControl)
    assert proc.pid_file == tmp_path / "apps" / "db.pid"
    assert isinstance(
        make_control(ApplicationConfig(name="a", control="systemd", unit="a.service"), tmp_path),
        SystemdControl,
    )
    assert isinstance(
        make_control(ApplicationConfig(name="a", control="windows", unit="A Svc"), tmp_path),
        WindowsServiceControl,
    )


# --- dependency order --------------------------------------------------------------------------


def names(apps: list[ApplicationConfig]) -> list[str]:
    return [a.name for a in apps]


def test_dependencies_come_first_and_ties_keep_config_order() -> None:
    apps = [
        app(name="web", depends_on=["api"]),
        app(name="api", depends_on=["db", "cache"]),
        app(name="metrics"),
        app(name="cache"),
        app(name="db"),
    ]
    assert names(dependency_order(apps)) == ["metrics", "cache", "db", "api", "web"]
    independent = [app(name="c"), app(name="a"), app(name="b")]
    assert names(dependency_order(independent)) == ["c", "a", "b"]


def test_unknown_dependency_names_both_apps() -> None:
    with pytest.raises(ValueError, match=r"'web' depends on unknown application.s.: api"):
        dependency_order([app(name="web", depends_on=["api"])])


def test_cycle_names_the_apps_on_it() -> None:
    apps = [
        app(name="outside", depends_on=["a"]),
        app(name="a", depends_on=["b"]),
        app(name="b", depends_on=["c"]),
        app(name="c", depends_on=["a"]),
    ]
    with pytest.raises(ValueError, match="dependency cycle: a -> b -> c -> a"):
        dependency_order(apps)


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(ValueError, match="'db' is configured twice"):
        dependency_order([app(), app()])


# --- the default runner -------------------------------------------------------------------------


async def test_run_command_returns_code_and_output() -> None:
    code = "import sys; print('out'); print('err', file=sys.stderr); sys.exit(4)"
    rc, out, err = await run_command([sys.executable, "-c", code], 30)
    assert (rc, out.strip(), err.strip()) == (4, "out", "err")


async def test_run_command_timeout_and_missing_program_raise_control_error() -> None:
    with pytest.raises(ControlError, match=r"did not finish within 0\.2s"):
        await run_command([sys.executable, "-c", "import time; time.sleep(600)"], 0.2)
    with pytest.raises(ControlError, match="cannot run /nonexistent/systemctl"):
        await run_command(["/nonexistent/systemctl", "show"], 30)


# --- systemd -----------------------------------------------------------------------------------

SHOW = ["systemctl", "show", "-p", "LoadState", "-p", "ActiveState", "-p", "SubState"]
SHOW += ["-p", "MainPID", "db.service"]
# systemctl show prints the properties in its own order, not the order asked.
RUNNING_SHOW = "MainPID=4242\nLoadState=loaded\nActiveState=active\nSubState=running\n"
STOPPED_SHOW = "MainPID=0\nLoadState=loaded\nActiveState=inactive\nSubState=dead\n"
FAILED_SHOW = "MainPID=0\nLoadState=loaded\nActiveState=failed\nSubState=failed\n"
START = ["systemctl", "--no-ask-password", "start", "db.service"]
STOP = ["systemctl", "--no-ask-password", "stop", "db.service"]


def test_systemctl_show_output_is_parsed() -> None:
    running = parse_show(RUNNING_SHOW)
    assert (running.state, running.pid, running.message) == (
        AppState.RUNNING,
        4242,
        "active (running)",
    )
    assert parse_show(STOPPED_SHOW).state is AppState.STOPPED
    assert parse_show(STOPPED_SHOW).pid is None
    assert parse_show(FAILED_SHOW).state is AppState.FAILED
    activating = "MainPID=7\nLoadState=loaded\nActiveState=activating\nSubState=start-pre\n"
    assert parse_show(activating).state is AppState.UNKNOWN
    missing = "MainPID=0\nLoadState=not-found\nActiveState=inactive\nSubState=dead\n"
    assert parse_show(missing).message == "unit not found"


async def test_systemd_start_issues_systemctl_start() -> None:
    runner = RecordingRunner(
        {tuple(SHOW): [(0, STOPPED_SHOW, ""), (0, RUNNING_SHOW, "")], tuple(START): [(0, "", "")]}
    )
    status = await SystemdControl("db.service", runner=runner).start()
    assert runner.calls == [SHOW, START, SHOW]
    assert (status.state, status.pid) == (AppState.RUNNING, 4242)


async def test_systemd_start_of_a_running_unit_does_nothing_and_says_so() -> None:
    runner = RecordingRunner({tuple(SHOW): [(0, RUNNING_SHOW, "")]})
    status = await SystemdControl("db.service", runner=runner).start()
    assert runner.calls == [SHOW]
    assert status.state is AppState.RUNNING and "already running" in status.message


async def test_systemd_stop_and_stop_again() -> None:
    runner = RecordingRunner(
        {tuple(SHOW): [(0, RUNNING_SHOW, ""), (0, STOPPED_SHOW, "")], tuple(STOP): [(0, "", "")]}
    )
    control = SystemdControl("db.service", runner=runner)
    assert (await control.stop()).state is AppState.STOPPED
    again = await control.stop()
    assert again.state is AppState.STOPPED and "already stopped" in again.message
    assert runner.calls == [SHOW, STOP, SHOW, SHOW]


async def test_systemd_failed_start_raises_with_systemctl_message() -> None:
    err = "Job for db.service failed because the control process exited with error code.\n"
    runner = RecordingRunner({tuple(SHOW): [(0, STOPPED_SHOW, "")], tuple(START): [(1, "", err)]})
    with pytest.raises(ControlError, match=r"exit code 1: Job for db.service failed"):
        await SystemdControl("db.service", runner=runner).start()


async def test_systemd_status_when_systemctl_cannot_run_is_unknown() -> None:
    async def broken(argv: list[str], timeout: float) -> Reply:
        raise ControlError("cannot run systemctl: No such file or directory")

    status = await SystemdControl("db.service", runner=broken).status()
    assert status.state is AppState.UNKNOWN and "cannot run systemctl" in status.message


# --- windows (sc.exe) --------------------------------------------------------------------------


def sc_query(code: int, name: str, pid: int = 0, exit_code: int = 0) -> str:
    """``sc.exe queryex`` output as Windows prints it."""
    return f"""
SERVICE_NAME: TandemDemo
        TYPE               : 10  WIN32_OWN_PROCESS
        STATE              : {code}  {name}
                                (STOPPABLE, NOT_PAUSABLE, ACCEPTS_SHUTDOWN)
        WIN32_EXIT_CODE    : {exit_code}  (0x{exit_code:x})
        SERVICE_EXIT_CODE  : 0  (0x0)
        CHECKPOINT         : 0x0
        WAIT_HINT          : 0x0
        PID                : {pid}
        FLAGS              :
"""


QUERY = ["sc.exe", "queryex", "TandemDemo"]
SC_START = ["sc.exe", "start", "TandemDemo"]
SC_STOP = ["sc.exe", "stop", "TandemDemo"]
TASKKILL = ["taskkill.exe", "/F", "/FI", "SERVICES eq TandemDemo"]
NOT_INSTALLED = (
    "[SC] EnumQueryServicesStatus:OpenService FAILED 1060:\n\n"
    "The specified service does not exist as an installed service.\n"
)


def windows(runner: Runner) -> WindowsServiceControl:
    return WindowsServiceControl(
        "TandemDemo", runner=runner, poll_interval_s=0.01, stop_grace_s=0.2, kill_wait_s=5
    )


def test_sc_query_output_is_parsed() -> None:
    running = parse_query(0, sc_query(4, "RUNNING", pid=1234))
    assert (running.state, running.pid) == (AppState.RUNNING, 1234)
    assert parse_query(0, sc_query(1, "STOPPED", exit_code=1077)).state is AppState.STOPPED
    failed = parse_query(0, sc_query(1, "STOPPED", exit_code=1067))
    assert failed.state is AppState.FAILED and "1067" in failed.message
    for code, name in [(2, "START_PENDING"), (3, "STOP_PENDING"), (7, "PAUSED")]:
        assert parse_query(0, sc_query(code, name)).state is AppState.UNKNOWN
    missing = parse_query(1060, NOT_INSTALLED)
    assert missing.state is AppState.UNKNOWN and "not installed" in missing.message


async def test_windows_start_waits_for_running() -> None:
    runner = RecordingRunner(
        {
            tuple(QUERY): [
                (0, sc_query(1, "STOPPED"), ""),
                (0, sc_query(2, "START_PENDING"), ""),
                (0, sc_query(4, "RUNNING", pid=99), ""),
            ],
            tuple(SC_START): [(0, sc_query(2, "START_PENDING", pid=99), "")],
        }
    )
    status = await windows(runner).start()
    assert runner.calls == [QUERY, SC_START, QUERY, QUERY]
    assert (status.state, status.pid) == (AppState.RUNNING, 99)


async def test_windows_start_of_running_service_says_so() -> None:
    runner = RecordingRunner({tuple(QUERY): [(0, sc_query(4, "RUNNING", pid=99), "")]})
    status = await windows(runner).start()
    assert runner.calls == [QUERY]
    assert status.message == "already running"


async def test_windows_start_of_missing_service_raises() -> None:
    start_failed = NOT_INSTALLED.replace("EnumQueryServicesStatus:OpenService", "StartService")
    runner = RecordingRunner(
        {tuple(QUERY): [(1060, NOT_INSTALLED, "")], tuple(SC_START): [(1060, start_failed, "")]}
    )
    with pytest.raises(ControlError, match=r"failed with code 1060: .* does not exist"):
        await windows(runner).start()


async def test_windows_stop_polls_until_stopped() -> None:
    runner = RecordingRunner(
        {
            tuple(QUERY): [
                (0, sc_query(4, "RUNNING", pid=99), ""),
                (0, sc_query(3, "STOP_PENDING"), ""),
                (0, sc_query(1, "STOPPED"), ""),
            ],
            tuple(SC_STOP): [(0, sc_query(3, "STOP_PENDING", pid=99), "")],
        }
    )
    status = await windows(runner).stop()
    assert runner.calls == [QUERY, SC_STOP, QUERY, QUERY]
    assert status.state is AppState.STOPPED
    assert TASKKILL not in runner.calls


async def test_windows_stop_of_stopped_service_says_so() -> None:
    runner = RecordingRunner({tuple(QUERY): [(0, sc_query(1, "STOPPED"), "")]})
    status = await windows(runner).stop()
    assert runner.calls == [QUERY]
    assert status.state is AppState.STOPPED and "already stopped" in status.message


async def test_windows_hung_service_is_killed_after_the_grace() -> None:
    pending = (0, sc_query(3, "STOP_PENDING", pid=99), "")
    # Stays STOP_PENDING until taskkill has run, then reports STOPPED.
    calls: list[list[str]] = []

    async def runner(argv: list[str], timeout: float) -> Reply:
        calls.append(argv)
        if argv == QUERY:
            return (0, sc_query(1, "STOPPED"), "") if TASKKILL in calls else pending
        if argv == SC_STOP:
            return pending
        assert argv == TASKKILL
        return (0, "SUCCESS: The process with PID 99 has been terminated.\n", "")

    status = await windows(runner).stop()
    assert status.state is AppState.STOPPED and "killed" in status.message
    assert calls[:2] == [QUERY, SC_STOP]
    assert calls.count(TASKKILL) == 1 and calls[-1] == QUERY
