"""An application run as a Windows service, controlled with sc.exe.

``sc.exe start`` and ``sc.exe stop`` only ask the Service Control Manager and return at once, so
both actions poll ``sc.exe queryex`` (``query`` plus the PID) until the service settles. A
service that does not stop within the grace period is ended with
``taskkill /F /FI "SERVICES eq <name>"``: it kills the process hosting the service, which is what
"forced stop" means for a hung service (``Stop-Service -Force`` only stops dependent services as
well and waits on the same hung service). It must therefore be used for services that run in
their own process, as protected applications do, never for ones sharing an svchost.
"""

from __future__ import annotations

import asyncio
import logging
import re

from tandem.agent.control.base import AppState, AppStatus, ControlError
from tandem.agent.control.runner import Runner, run_command

log = logging.getLogger(__name__)

# Win32 error codes sc.exe exits with.
ERROR_SERVICE_ALREADY_RUNNING = 1056
ERROR_SERVICE_CANNOT_ACCEPT_CTRL = 1061  # in a pending state
ERROR_SERVICE_NOT_ACTIVE = 1062
ERROR_SERVICE_DOES_NOT_EXIST = 1060
# WIN32_EXIT_CODE of a service that has simply not been started since boot: not a failure.
ERROR_SERVICE_NEVER_STARTED = 1077

_STATES = {
    1: "STOPPED",
    2: "START_PENDING",
    3: "STOP_PENDING",
    4: "RUNNING",
    5: "CONTINUE_PENDING",
    6: "PAUSE_PENDING",
    7: "PAUSED",
}
_STATE_LINE = re.compile(r"^\s*STATE\s*:\s*(\d+)", re.MULTILINE)
_PID_LINE = re.compile(r"^\s*PID\s*:\s*(\d+)", re.MULTILINE)
_EXIT_LINE = re.compile(r"^\s*WIN32_EXIT_CODE\s*:\s*(\d+)", re.MULTILINE)
_COMMAND_TIMEOUT_S = 30.0


def start_argv(name: str) -> list[str]:
    return ["sc.exe", "start", name]


def stop_argv(name: str) -> list[str]:
    return ["sc.exe", "stop", name]


def query_argv(name: str) -> list[str]:
    return ["sc.exe", "queryex", name]


def force_kill_argv(name: str) -> list[str]:
    return ["taskkill.exe", "/F", "/FI", f"SERVICES eq {name}"]


def parse_query(rc: int, stdout: str) -> AppStatus:
    """The status described by ``sc.exe queryex`` output and exit code."""
    if rc == ERROR_SERVICE_DOES_NOT_EXIST:
        return AppStatus(state=AppState.UNKNOWN, message="service is not installed")
    match = _STATE_LINE.search(stdout)
    if rc != 0 or match is None:
        return AppStatus(
            state=AppState.UNKNOWN, message=f"sc.exe queryex failed ({rc}): {_gist(stdout)}"
        )
    code = int(match.group(1))
    name = _STATES.get(code, f"STATE {code}")
    pid_match = _PID_LINE.search(stdout)
    pid = int(pid_match.group(1)) if pid_match else 0
    if code == 4:
        return AppStatus(state=AppState.RUNNING, pid=pid or None, message=name)
    if code == 1:
        exit_match = _EXIT_LINE.search(stdout)
        exit_code = int(exit_match.group(1)) if exit_match else 0
        if exit_code not in (0, ERROR_SERVICE_NEVER_STARTED):
            return AppStatus(state=AppState.FAILED, message=f"{name} (WIN32_EXIT_CODE {exit_code})")
        return AppStatus(state=AppState.STOPPED, message=name)
    # Pending states and PAUSED: neither serving nor down.
    return AppStatus(state=AppState.UNKNOWN, pid=pid or None, message=name)


class WindowsServiceControl:
    def __init__(
        self,
        name: str,
        *,
        runner: Runner = run_command,
        start_timeout_s: float = 30.0,
        stop_grace_s: float = 10.0,
        kill_wait_s: float = 10.0,
        poll_interval_s: float = 0.5,
    ) -> None:
        self.name = name
        self._run = runner
        self._start_timeout_s = start_timeout_s
        self._stop_grace_s = stop_grace_s
        self._kill_wait_s = kill_wait_s
        self._poll_s = poll_interval_s

    async def status(self) -> AppStatus:
        try:
            rc, out, _err = await self._run(query_argv(self.name), _COMMAND_TIMEOUT_S)
        except ControlError as exc:
            return AppStatus(state=AppState.UNKNOWN, message=exc.message)
        return parse_query(rc, out)

    async def start(self) -> AppStatus:
        before = await self.status()
        if before.state is AppState.RUNNING:
            return before.model_copy(update={"message": "already running"})
        rc, out, err = await self._run(start_argv(self.name), _COMMAND_TIMEOUT_S)
        if rc not in (0, ERROR_SERVICE_ALREADY_RUNNING):
            raise ControlError(
                f"sc.exe start {self.name} failed with code {rc}: {_gist(out + err)}"
            )
        after = await self._wait_until({AppState.RUNNING}, self._start_timeout_s)
        if after.state is AppState.RUNNING:
            log.info("started service %s (pid %s)", self.name, after.pid)
            return after.model_copy(update={"message": "started"})
        if after.state in (AppState.STOPPED, AppState.FAILED):
            raise ControlError(f"service {self.name} stopped while starting: {after.message}")
        raise ControlError(
            f"service {self.name} did not reach RUNNING within {self._start_timeout_s:g}s "
            f"(last state: {after.message})"
        )

    async def stop(self) -> AppStatus:
        down = {AppState.STOPPED, AppState.FAILED}
        before = await self.status()
        if before.state in down:
            return AppStatus(state=AppState.STOPPED, message=f"already stopped: {before.message}")
        rc, out, err = await self._run(stop_argv(self.name), _COMMAND_TIMEOUT_S)
        if rc not in (0, ERROR_SERVICE_NOT_ACTIVE, ERROR_SERVICE_CANNOT_ACCEPT_CTRL):
            raise ControlError(f"sc.exe stop {self.name} failed with code {rc}: {_gist(out + err)}")
        after = await self._wait_until(down, self._stop_grace_s)
        if after.state in down:
            log.info("stopped service %s", self.name)
            return AppStatus(state=AppState.STOPPED, message=f"stopped: {after.message}")
        log.warning(
            "service %s not stopped after %gs (%s); killing its process",
            self.name,
            self._stop_grace_s,
            after.message,
        )
        rc, out, err = await self._run(force_kill_argv(self.name), _COMMAND_TIMEOUT_S)
        if rc != 0:
            log.warning("taskkill for service %s exited %d: %s", self.name, rc, _gist(out + err))
        after = await self._wait_until(down, self._kill_wait_s)
        if after.state in down:
            return AppStatus(
                state=AppState.STOPPED,
                message=f"stopped: process killed after {self._stop_grace_s:g}s grace",
            )
        raise ControlError(
            f"service {self.name} is still not stopped after taskkill (state: {after.message})"
        )

    async def _wait_until(self, wanted: set[AppState], timeout: float) -> AppStatus:
        """Poll until the state is one of ``wanted`` or, for a start, the service went down."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            current = await self.status()
            settled = current.state in wanted or (
                AppState.RUNNING in wanted and current.state in (AppState.STOPPED, AppState.FAILED)
            )
            if settled or loop.time() >= deadline:
                return current
            await asyncio.sleep(self._poll_s)


def _gist(text: str) -> str:
    """The meaningful part of sc.exe output, on one line."""
    words = " ".join(line.strip() for line in text.splitlines() if line.strip())
    return words or "(no output)"
