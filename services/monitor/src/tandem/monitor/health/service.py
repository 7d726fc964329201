"""Service check: is a systemd unit or a Windows service running.

Pure parts (argv composition, output parsing, state judgement) are separate from running the
command, which goes through an injectable async runner (default: ``run_argv``, a real
subprocess), so the Windows path can be tested on a machine without ``sc.exe``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Literal

from pydantic import Field, model_validator

from tandem.events.catalog.vocabulary import HealthStatus
from tandem.monitor.health.base import Sample, failed_sample
from tandem.monitor.health.checkbase import CheckBase
from tandem.monitor.health.command import CommandResult, first_line, run_argv

log = logging.getLogger(__name__)

Runner = Callable[[Sequence[str]], Awaitable[CommandResult]]

SYSTEMD_UNIT_PATTERN = re.compile(r"^[A-Za-z0-9_:.@\\][A-Za-z0-9_:.@\\-]{0,255}$")
WINDOWS_NAME_PATTERN = re.compile(r"^[^-/\\\s][^/\\]{0,255}$")
_SC_STATE = re.compile(r"^\s*STATE\s*:\s*\d+\s+([A-Z_]+)", re.MULTILINE)

#: ActiveState values (systemd) and sc.exe states (Windows) judged OK / WARNING; others CRITICAL.
SYSTEMD_OK = frozenset({"active", "reloading"})
SYSTEMD_WARN = frozenset({"activating", "deactivating", "refreshing"})
WINDOWS_OK = frozenset({"RUNNING"})
WINDOWS_WARN = frozenset({"START_PENDING", "CONTINUE_PENDING", "STOP_PENDING", "PAUSE_PENDING"})


def systemd_status_argv(unit: str) -> list[str]:
    return ["systemctl", "show", "--property=LoadState,ActiveState,SubState", unit]


def windows_status_argv(name: str) -> list[str]:
    return ["sc.exe", "query", name]


def parse_systemctl_show(text: str) -> dict[str, str]:
    """``Key=value`` lines of ``systemctl show`` as a dict."""
    props: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            props[key.strip()] = value.strip()
    return props


def parse_sc_query(text: str) -> str:
    """The state word of ``sc.exe query`` output (``RUNNING``, ``STOPPED``...), else ValueError."""
    match = _SC_STATE.search(text)
    if match is None:
        raise ValueError("no STATE line in sc.exe output")
    return match.group(1)


def judge(state: str, ok: frozenset[str], warn: frozenset[str]) -> HealthStatus:
    if state in ok:
        return HealthStatus.OK
    if state in warn:
        return HealthStatus.WARNING
    return HealthStatus.CRITICAL


class ServiceCheckConfig(CheckBase):
    plugin: Literal["service"] = "service"
    #: The systemd unit (``nginx.service``) or the Windows service name (``Spooler``).
    unit: str = Field(min_length=1, max_length=256)
    platform: Literal["systemd", "windows"] = "systemd"

    @model_validator(mode="after")
    def _valid_unit(self) -> ServiceCheckConfig:
        pattern = SYSTEMD_UNIT_PATTERN if self.platform == "systemd" else WINDOWS_NAME_PATTERN
        if not pattern.match(self.unit):
            raise ValueError(f"unit {self.unit!r} is not a valid {self.platform} service name")
        return self


class ServiceCheck:
    """Metric: ``active`` (1 when systemd's ActiveState is active / sc.exe says RUNNING)."""

    kind = "service"

    def __init__(self, config: ServiceCheckConfig, runner: Runner | None = None) -> None:
        self.config = config
        self.runner: Runner = runner or run_argv

    async def check(self) -> Sample:
        unit = self.config.unit
        if self.config.platform == "systemd":
            argv = systemd_status_argv(unit)
        else:
            argv = windows_status_argv(unit)
        try:
            result = await self.runner(argv)
        except FileNotFoundError:
            return failed_sample(f"{argv[0]} is not installed: cannot check service {unit}")
        except PermissionError:
            return failed_sample(f"{argv[0]} cannot be run (permission denied): service {unit}")
        if self.config.platform == "systemd":
            return self._systemd(result)
        return self._windows(result)

    def _systemd(self, result: CommandResult) -> Sample:
        unit = self.config.unit
        props = parse_systemctl_show(result.stdout)
        if result.returncode != 0 or "ActiveState" not in props:
            why = first_line(result.stderr) or first_line(result.stdout) or "no output"
            return failed_sample(f"systemctl could not query {unit}: {why}")
        active = props["ActiveState"]
        sub = props.get("SubState", "")
        metrics = {"active": 1.0 if active == "active" else 0.0}
        if props.get("LoadState") == "not-found":
            return Sample(
                status=HealthStatus.CRITICAL, metrics=metrics, message=f"unit {unit} is not found"
            )
        status = judge(active, SYSTEMD_OK, SYSTEMD_WARN)
        state = f"{active} ({sub})" if sub else active
        return Sample(status=status, metrics=metrics, message=f"unit {unit} is {state}")

    def _windows(self, result: CommandResult) -> Sample:
        unit = self.config.unit
        try:
            state = parse_sc_query(result.stdout)
        except ValueError:
            why = first_line(result.stdout) or first_line(result.stderr) or "no output"
            if result.returncode == 1060:  # ERROR_SERVICE_DOES_NOT_EXIST
                return Sample(
                    status=HealthStatus.CRITICAL,
                    metrics={"active": 0.0},
                    message=f"service {unit} does not exist",
                )
            return failed_sample(f"sc.exe could not query service {unit}: {why}")
        metrics = {"active": 1.0 if state in WINDOWS_OK else 0.0}
        status = judge(state, WINDOWS_OK, WINDOWS_WARN)
        return Sample(status=status, metrics=metrics, message=f"service {unit} is {state}")
