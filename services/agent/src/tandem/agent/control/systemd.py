"""An application run as a systemd unit, controlled with systemctl."""

from __future__ import annotations

import logging

from tandem.agent.control.base import AppState, AppStatus, ControlError
from tandem.agent.control.runner import Runner, run_command

log = logging.getLogger(__name__)

_STATUS_TIMEOUT_S = 10.0
_ACTIVE_STATES = {
    "active": AppState.RUNNING,
    "reloading": AppState.RUNNING,
    "inactive": AppState.STOPPED,
    "failed": AppState.FAILED,
    # activating, deactivating, maintenance...: a transition, reported as UNKNOWN
}


def start_argv(unit: str) -> list[str]:
    # --no-ask-password: an agent has no one to answer a polkit prompt; fail instead of hanging.
    return ["systemctl", "--no-ask-password", "start", unit]


def stop_argv(unit: str) -> list[str]:
    return ["systemctl", "--no-ask-password", "stop", unit]


def show_argv(unit: str) -> list[str]:
    # LoadState as well, so a unit that does not exist is not mistaken for a stopped one.
    return [
        "systemctl",
        "show",
        "-p",
        "LoadState",
        "-p",
        "ActiveState",
        "-p",
        "SubState",
        "-p",
        "MainPID",
        unit,
    ]


def parse_show(stdout: str) -> AppStatus:
    """The status described by ``systemctl show -p ...`` output (``Key=Value`` lines)."""
    props: dict[str, str] = {}
    for line in stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            props[key.strip()] = value.strip()
    load = props.get("LoadState", "")
    active = props.get("ActiveState", "")
    sub = props.get("SubState", "")
    if load == "not-found":
        return AppStatus(state=AppState.UNKNOWN, message="unit not found")
    if not active:
        return AppStatus(state=AppState.UNKNOWN, message="systemctl show gave no ActiveState")
    try:
        main_pid = int(props.get("MainPID", "0"))
    except ValueError:
        main_pid = 0
    state = _ACTIVE_STATES.get(active, AppState.UNKNOWN)
    return AppStatus(state=state, pid=main_pid or None, message=f"{active} ({sub})")


class SystemdControl:
    """Start/stop/status of one systemd unit. ``systemctl start`` and ``stop`` wait for the job
    to finish, so their timeouts bound the whole action."""

    def __init__(
        self,
        unit: str,
        *,
        runner: Runner = run_command,
        start_timeout_s: float = 30.0,
        stop_timeout_s: float = 10.0,
    ) -> None:
        self.unit = unit
        self._run = runner
        self._start_timeout_s = start_timeout_s
        self._stop_timeout_s = stop_timeout_s

    async def status(self) -> AppStatus:
        try:
            rc, out, err = await self._run(show_argv(self.unit), _STATUS_TIMEOUT_S)
        except ControlError as exc:
            return AppStatus(state=AppState.UNKNOWN, message=exc.message)
        if rc != 0:
            return AppStatus(
                state=AppState.UNKNOWN,
                message=f"systemctl show {self.unit} failed ({rc}): {_first_line(err, out)}",
            )
        return parse_show(out)

    async def start(self) -> AppStatus:
        before = await self.status()
        if before.state is AppState.RUNNING:
            return before.model_copy(update={"message": f"already running: {before.message}"})
        await self._act(start_argv(self.unit), self._start_timeout_s, "start")
        after = await self.status()
        if after.state is AppState.FAILED:
            raise ControlError(f"unit {self.unit} failed while starting: {after.message}")
        log.info("started unit %s: %s", self.unit, after.message)
        return after.model_copy(update={"message": f"started: {after.message}"})

    async def stop(self) -> AppStatus:
        before = await self.status()
        if before.state is AppState.STOPPED:
            return before.model_copy(update={"message": f"already stopped: {before.message}"})
        await self._act(stop_argv(self.unit), self._stop_timeout_s, "stop")
        after = await self.status()
        if after.state not in (AppState.STOPPED, AppState.FAILED):
            raise ControlError(f"unit {self.unit} is not down after stop: {after.message}")
        log.info("stopped unit %s: %s", self.unit, after.message)
        # A unit that failed on the way down is stopped all the same: nothing of it runs.
        return AppStatus(state=AppState.STOPPED, message=f"stopped: {after.message}")

    async def _act(self, argv: list[str], timeout: float, verb: str) -> None:
        rc, out, err = await self._run(argv, timeout)
        if rc != 0:
            raise ControlError(
                f"systemctl {verb} {self.unit} failed with exit code {rc}: {_first_line(err, out)}"
            )


def _first_line(*texts: str) -> str:
    for text in texts:
        for line in text.splitlines():
            if line.strip():
                return line.strip()
    return "(no output)"
