"""Health plugins, fast parts: config validation, pure parsing/judging, the factory, and
``sample_within`` around plugins that hang or raise.

The Windows service path is tested here through an injected runner fed real-looking
``sc.exe query`` output: there is no Windows host (and no ``sc.exe``) on the test machines.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from tandem.events.catalog.vocabulary import HealthStatus
from tandem.monitor.health.base import HealthPlugin, Sample, sample_within
from tandem.monitor.health.command import (
    CommandCheck,
    CommandResult,
    extract_value,
    first_line,
    status_for_exit,
)
from tandem.monitor.health.config import build_plugin, parse_check_config
from tandem.monitor.health.http import HttpCheck
from tandem.monitor.health.perf import CpuTimes, PerfCheck, PerfCheckConfig, busy_percent
from tandem.monitor.health.process import ProcessCheck, matches_name, read_pid_file
from tandem.monitor.health.service import (
    ServiceCheck,
    ServiceCheckConfig,
    parse_sc_query,
    parse_systemctl_show,
    systemd_status_argv,
    windows_status_argv,
)
from tandem.monitor.health.sql import SqlCheck, write_time
from tandem.monitor.health.tcp import TcpCheck


def error_fields(exc: ValidationError) -> set[str]:
    """Every name in every error location (model-level errors have only the union tag)."""
    return {str(part) for err in exc.errors() for part in err["loc"]}


def invalid(data: dict[str, Any]) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        parse_check_config(data)
    return info.value


# --- common fields and the tagged union -------------------------------------------------------


def test_common_fields_have_defaults() -> None:
    cfg = parse_check_config({"plugin": "tcp", "name": "db-port_1", "host": "h", "port": 5432})
    assert (cfg.interval_s, cfg.timeout_s, cfg.enabled, cfg.application) == (5.0, 5.0, True, None)


@pytest.mark.parametrize("name", ["", "has space", "dot.ted", "x" * 65, "sub>ject", "a*"])
def test_a_name_must_be_a_subject_token(name: str) -> None:
    assert "name" in error_fields(invalid({"plugin": "tcp", "name": name, "host": "h", "port": 1}))


@given(st.from_regex(r"\A[A-Za-z0-9_-]{1,64}\Z"))
def test_every_token_name_is_accepted(name: str) -> None:
    assert parse_check_config({"plugin": "tcp", "name": name, "host": "h", "port": 1}).name == name


@pytest.mark.parametrize("field", ["interval_s", "timeout_s"])
def test_intervals_must_be_positive(field: str) -> None:
    data = {"plugin": "tcp", "name": "t", "host": "h", "port": 1, field: 0}
    assert field in error_fields(invalid(data))


def test_unknown_fields_and_plugins_are_refused() -> None:
    assert "colour" in error_fields(
        invalid({"plugin": "tcp", "name": "t", "host": "h", "port": 1, "colour": "red"})
    )
    exc = invalid({"plugin": "telepathy", "name": "t"})
    assert "telepathy" in str(exc)


def test_configs_are_frozen() -> None:
    cfg = parse_check_config({"plugin": "tcp", "name": "t", "host": "h", "port": 1})
    with pytest.raises(ValidationError):
        cfg.port = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("data", "cls"),
    [
        ({"plugin": "process", "process_name": "nginx"}, ProcessCheck),
        ({"plugin": "service", "unit": "nginx.service"}, ServiceCheck),
        ({"plugin": "tcp", "host": "h", "port": 80}, TcpCheck),
        ({"plugin": "http", "url": "http://h/health"}, HttpCheck),
        ({"plugin": "command", "argv": ["true"]}, CommandCheck),
        ({"plugin": "sql", "driver": "sqlite3"}, SqlCheck),
        ({"plugin": "perf"}, PerfCheck),
    ],
)
def test_build_plugin_gives_the_plugin_of_the_kind(data: dict[str, Any], cls: type) -> None:
    plugin: HealthPlugin = build_plugin(parse_check_config({"name": "c", **data}))
    assert isinstance(plugin, cls)
    assert plugin.kind == data["plugin"]


# --- sample_within around plugins that misbehave ---------------------------------------------


class Hanging:
    kind = "hanging"

    async def check(self) -> Sample:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


class Raising:
    kind = "raising"

    async def check(self) -> Sample:
        raise RuntimeError("the probe fell over")


async def test_a_hanging_plugin_gives_a_failed_sample() -> None:
    sample = await sample_within(Hanging(), 0.05)
    assert sample.completed is False
    assert sample.status == HealthStatus.CRITICAL
    assert "hanging check timed out" in sample.message


async def test_a_raising_plugin_gives_a_failed_sample_with_the_error() -> None:
    sample = await sample_within(Raising(), 5)
    assert sample.completed is False
    assert "RuntimeError: the probe fell over" in sample.message


# --- process -----------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [{}, {"process_name": "a", "pid_file": "/run/a.pid"}])
def test_process_needs_exactly_one_selector(data: dict[str, Any]) -> None:
    exc = invalid({"plugin": "process", "name": "p", **data})
    assert "exactly one of process_name or pid_file" in str(exc)


def test_process_name_matches_name_or_argv0_basename() -> None:
    assert matches_name("nginx", None, "nginx")
    assert matches_name("python3", ["/usr/sbin/tandem-agent", "--x"], "tandem-agent")
    assert not matches_name("python3", ["/usr/bin/python3", "tandem-agent"], "tandem-agent")
    assert not matches_name(None, [], "nginx")


def test_pid_files_missing_or_garbage_say_so(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        read_pid_file(tmp_path / "none.pid")
    (tmp_path / "bad.pid").write_text("not a pid\n")
    with pytest.raises(ValueError, match="does not hold a pid"):
        read_pid_file(tmp_path / "bad.pid")
    (tmp_path / "ok.pid").write_text("  4242\n")
    assert read_pid_file(tmp_path / "ok.pid") == 4242


# --- service ----------------------------------------------------------------------------------

SC_RUNNING = """
SERVICE_NAME: Spooler
        TYPE               : 110  WIN32_OWN_PROCESS  (interactive)
        STATE              : 4  RUNNING
                                (STOPPABLE, NOT_PAUSABLE, ACCEPTS_SHUTDOWN)
        WIN32_EXIT_CODE    : 0  (0x0)
        SERVICE_EXIT_CODE  : 0  (0x0)
        CHECKPOINT         : 0x0
        WAIT_HINT          : 0x0
"""
SC_STOPPED = SC_RUNNING.replace("4  RUNNING", "1  STOPPED").replace(
    "(STOPPABLE, NOT_PAUSABLE, ACCEPTS_SHUTDOWN)", "(NOT_STOPPABLE, NOT_PAUSABLE, IGNORES_SHUTDOWN)"
)
SC_MISSING = (
    "[SC] EnumQueryServicesStatus:OpenService FAILED 1060:\r\n\r\n"
    "The specified service does not exist as an installed service.\r\n\r\n"
)


class ScriptedRunner:
    """Stands in for a host we do not have: records the argv, answers with canned output."""

    def __init__(self, result: CommandResult) -> None:
        self.result = result
        self.argvs: list[list[str]] = []

    async def __call__(self, argv: Sequence[str]) -> CommandResult:
        self.argvs.append(list(argv))
        return self.result


def test_status_argv_composition() -> None:
    assert windows_status_argv("Spooler") == ["sc.exe", "query", "Spooler"]
    assert systemd_status_argv("nginx.service") == [
        "systemctl",
        "show",
        "--property=LoadState,ActiveState,SubState",
        "nginx.service",
    ]


@pytest.mark.parametrize(
    ("text", "state"),
    [
        (SC_RUNNING, "RUNNING"),
        (SC_STOPPED, "STOPPED"),
        (SC_RUNNING.replace("4  RUNNING", "2  START_PENDING"), "START_PENDING"),
        (SC_RUNNING.replace("\n", "\r\n"), "RUNNING"),
    ],
)
def test_parse_sc_query(text: str, state: str) -> None:
    assert parse_sc_query(text) == state


def test_parse_sc_query_without_a_state_line() -> None:
    with pytest.raises(ValueError, match="no STATE line"):
        parse_sc_query(SC_MISSING)


@pytest.mark.parametrize(
    ("stdout", "returncode", "status", "active", "words"),
    [
        (SC_RUNNING, 0, HealthStatus.OK, 1.0, "is RUNNING"),
        (SC_STOPPED, 0, HealthStatus.CRITICAL, 0.0, "is STOPPED"),
        (SC_MISSING, 1060, HealthStatus.CRITICAL, 0.0, "does not exist"),
    ],
)
async def test_windows_service_through_sc_exe(
    stdout: str, returncode: int, status: HealthStatus, active: float, words: str
) -> None:
    """No Windows host here: the runner answers with what sc.exe prints."""
    runner = ScriptedRunner(CommandResult(returncode, stdout, ""))
    cfg = ServiceCheckConfig(name="spool", unit="Spooler", platform="windows")
    sample = await ServiceCheck(cfg, runner=runner).check()
    assert runner.argvs == [["sc.exe", "query", "Spooler"]]
    assert (sample.status, sample.metrics["active"]) == (status, active)
    assert f"service Spooler {words}" in sample.message


def test_parse_systemctl_show() -> None:
    text = "LoadState=loaded\nActiveState=active\nSubState=running\n"
    assert parse_systemctl_show(text) == {
        "LoadState": "loaded",
        "ActiveState": "active",
        "SubState": "running",
    }


NGINX = ServiceCheckConfig(name="web", unit="nginx.service")


def show(load: str, active: str, sub: str) -> str:
    return f"LoadState={load}\nActiveState={active}\nSubState={sub}\n"


@pytest.mark.parametrize(
    ("stdout", "status", "active", "words"),
    [
        (show("loaded", "active", "running"), HealthStatus.OK, 1.0, "is active (running)"),
        (show("loaded", "failed", "failed"), HealthStatus.CRITICAL, 0.0, "is failed (failed)"),
        (show("loaded", "activating", "start"), HealthStatus.WARNING, 0.0, "is activating"),
        (show("not-found", "inactive", "dead"), HealthStatus.CRITICAL, 0.0, "is not found"),
    ],
)
async def test_systemd_unit_from_systemctl_show(
    stdout: str, status: HealthStatus, active: float, words: str
) -> None:
    runner = ScriptedRunner(CommandResult(0, stdout, ""))
    sample = await ServiceCheck(NGINX, runner).check()
    assert runner.argvs == [systemd_status_argv("nginx.service")]
    assert (sample.status, sample.metrics["active"]) == (status, active)
    assert f"unit nginx.service {words}" in sample.message


async def test_systemctl_failing_gives_a_failed_sample_with_its_words() -> None:
    stderr = "System has not been booted with systemd as init system (PID 1). Can't operate.\n"
    runner = ScriptedRunner(CommandResult(1, "", stderr))
    sample = await ServiceCheck(NGINX, runner).check()
    assert sample.completed is False
    assert "systemctl could not query nginx.service: System has not been booted" in sample.message


@pytest.mark.parametrize(
    ("unit", "platform"), [("-H evil", "systemd"), ("a/b", "systemd"), ("a\\b", "windows")]
)
def test_service_names_that_could_be_options_or_paths_are_refused(unit: str, platform: str) -> None:
    exc = invalid({"plugin": "service", "name": "s", "unit": unit, "platform": platform})
    assert "not a valid" in str(exc)


# --- http -------------------------------------------------------------------------------------


def test_http_body_match_is_compiled_and_an_invalid_regex_is_refused() -> None:
    data = {"plugin": "http", "name": "h", "url": "http://h/", "body_match": "o+k"}
    cfg = parse_check_config(data)
    assert cfg.body_match.search("look")  # type: ignore[union-attr]
    exc = invalid({"plugin": "http", "name": "h", "url": "http://h/", "body_match": "(unclosed"})
    assert "body_match" in error_fields(exc)


@pytest.mark.parametrize(
    ("field", "value"),
    [("url", "ftp://h/"), ("url", "/relative"), ("expect_status", [700]), ("method", "BREW")],
)
def test_http_invalid_fields_are_named(field: str, value: object) -> None:
    data = {"plugin": "http", "name": "h", "url": "http://h/", field: value}
    assert field in error_fields(invalid(data))


# --- command ----------------------------------------------------------------------------------


def test_command_needs_an_argv_and_a_valid_value_regex() -> None:
    assert "argv" in error_fields(invalid({"plugin": "command", "name": "c", "argv": []}))
    exc = invalid({"plugin": "command", "name": "c", "argv": ["x"], "value_regex": "[a-"})
    assert "value_regex" in error_fields(exc)


@pytest.mark.parametrize(
    ("pattern", "text", "value"),
    [
        (r"load=(\S+)", "ok load=0.75 here", 0.75),
        (r"-?\d+(?:\.\d+)?", "queue depth 12 items", 12.0),
        (r"load=(\S+)", "nothing to see", None),
        (r"load=(\S+)", "load=high", None),
    ],
)
def test_extract_value(pattern: str, text: str, value: float | None) -> None:
    assert extract_value(re.compile(pattern), text) == value


def test_nagios_like_exit_codes() -> None:
    assert status_for_exit(0, [0], [1]) == HealthStatus.OK
    assert status_for_exit(1, [0], [1]) == HealthStatus.WARNING
    assert status_for_exit(2, [0], [1]) == HealthStatus.CRITICAL
    assert status_for_exit(-9, [0], [1]) == HealthStatus.CRITICAL
    assert first_line("\n\n  DISK OK - free 40%  \nmore") == "DISK OK - free 40%"


# --- sql --------------------------------------------------------------------------------------


def test_sql_unknown_driver_is_a_validation_error_naming_the_field() -> None:
    exc = invalid({"plugin": "sql", "name": "s", "driver": "no_such_dbapi_driver"})
    assert "driver" in error_fields(exc)
    assert "no_such_dbapi_driver" in str(exc)


def test_sql_max_age_needs_a_freshness_query() -> None:
    exc = invalid({"plugin": "sql", "name": "s", "driver": "sqlite3", "max_age_s": 30})
    assert "max_age_s needs a freshness_query" in str(exc)


def test_write_time_accepts_numbers_datetimes_and_iso_strings() -> None:
    moment = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    ts = moment.timestamp()
    assert write_time(ts) == ts
    assert write_time(int(ts)) == ts
    assert write_time(str(ts)) == ts
    assert write_time(moment) == ts
    assert write_time(moment.replace(tzinfo=None)) == ts  # naive means UTC
    assert write_time("2024-05-01T12:00:00Z") == ts
    assert write_time("2024-05-01 14:00:00+02:00") == ts
    assert write_time(moment.astimezone(timezone(timedelta(hours=-5)))) == ts
    for garbage in ("yesterday", True, None, [1]):
        with pytest.raises(ValueError, match="not a time"):
            write_time(garbage)


@given(st.datetimes(timezones=st.just(UTC)))
def test_write_time_round_trips_iso_strings(moment: datetime) -> None:
    assert math.isclose(write_time(moment.isoformat()), moment.timestamp())


# --- perf -------------------------------------------------------------------------------------


def test_busy_percent() -> None:
    assert busy_percent(CpuTimes(100, 40), CpuTimes(200, 90)) == 50.0
    assert busy_percent(CpuTimes(100, 40), CpuTimes(100, 40)) == 0.0


def test_perf_breaches_name_every_crossed_threshold() -> None:
    cfg = PerfCheckConfig(
        name="perf",
        pid_file=Path("/run/app.pid"),
        max_cpu_percent=90,
        max_memory_percent=80,
        min_disk_free_percent=10,
        max_disk_latency_ms=50,
        max_process_rss_bytes=1000,
    )
    plugin = PerfCheck(cfg)
    calm = {
        "cpu_percent": 10.0,
        "memory_percent": 20.0,
        "disk_free_percent": 50.0,
        "disk_latency_ms": 1.0,
        "process_rss_bytes": 10.0,
    }
    assert plugin.breaches(calm) == []
    stormy = {
        "cpu_percent": 97.0,
        "memory_percent": 85.0,
        "disk_free_percent": 4.0,
        "disk_latency_ms": 80.0,
        "process_rss_bytes": 5000.0,
    }
    assert plugin.breaches(stormy) == [
        "cpu 97% above 90%",
        "memory 85% above 80%",
        "disk / 4% free below 10%",
        "disk latency 80 ms above 50 ms",
        "process rss 5000 bytes above 1000 bytes",
    ]


def test_perf_process_options() -> None:
    exc = invalid({"plugin": "perf", "name": "p", "process_name": "a", "pid_file": "/a.pid"})
    assert "at most one of process_name or pid_file" in str(exc)
    exc = invalid({"plugin": "perf", "name": "p", "max_process_rss_bytes": 10})
    assert "needs process_name or pid_file" in str(exc)
    exc = invalid({"plugin": "perf", "name": "p", "max_cpu_percent": 150})
    assert "max_cpu_percent" in error_fields(exc)
