"""An application the agent runs as a process of its own (in a new session, so it survives the
agent and can be stopped as a whole process group).

The pid file holds ``"<pid> <create_time> <start_ticks>"``. After an agent restart, the recorded
process is adopted only if that pid still exists with that start (in clock ticks since boot, which
a stepped clock does not move): pids are reused, and a different process that happens to carry
the old pid must never be taken for the application (or killed).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from tandem.agent.control import procfiles
from tandem.agent.control.base import AppState, AppStatus, ControlError
from tandem.agent.control.procfiles import Record

if TYPE_CHECKING:
    from tandem.agent.control.config import ApplicationConfig

log = logging.getLogger(__name__)

# How long to wait for the application to vanish once SIGKILLed (only a process stuck in the
# kernel survives that long).
_KILL_WAIT_S = 5.0


class ProcessControl:
    """Control of one application spawned from its ``start`` argv.

    The pid file is ``app.pid_file`` or ``<state_dir>/apps/<name>.pid``. A start succeeds once
    the process is still alive after ``settle_s`` (at most ``start_timeout_s``); one that exits
    before is a failed start. A stop sends ``stop_signal`` to the process group (or runs the
    ``stop`` command, falling back to the signal if that fails), waits up to ``stop_grace_s``,
    then SIGKILLs the group. With ``user`` set, the application and its stop command run as
    that user. Before a start that finds no live recorded process (none recorded, or the
    recorded one has exited), the app's ``stale_files`` are removed.
    """

    def __init__(
        self,
        app: ApplicationConfig,
        state_dir: Path,
        *,
        settle_s: float = 1.0,
        poll_interval_s: float = 0.05,
    ) -> None:
        if app.start is None:
            raise ValueError(f"application {app.name!r} has no start command")
        self.app = app
        self.pid_file = app.pid_file or state_dir / "apps" / f"{app.name}.pid"
        self._settle_s = min(settle_s, app.start_timeout_s)
        self._poll_s = poll_interval_s
        self._lock = asyncio.Lock()
        # The process this instance spawned: kept so it can be reaped and its exit code read.
        self._child: subprocess.Popen[bytes] | None = None

    async def status(self) -> AppStatus:
        record = await asyncio.to_thread(procfiles.read_record, self.pid_file)
        if record is None:
            return AppStatus(state=AppState.STOPPED, message="not running")
        verdict = await asyncio.to_thread(self._check, record)
        if verdict.alive:
            return AppStatus(state=AppState.RUNNING, pid=record.pid, message="running")
        # A recorded process that is gone without a stop from us has ended on its own.
        code = self._exit_code(record.pid)
        if code is not None and code != 0:
            return AppStatus(state=AppState.FAILED, message=f"{verdict.why}; exit code {code}")
        return AppStatus(state=AppState.STOPPED, message=verdict.why)

    async def start(self) -> AppStatus:
        async with self._lock:
            record = await asyncio.to_thread(procfiles.read_record, self.pid_file)
            dead: str | None = "no process of it is recorded"
            if record is not None:
                verdict = await asyncio.to_thread(self._check, record)
                if verdict.alive:
                    return AppStatus(
                        state=AppState.RUNNING, pid=record.pid, message="already running"
                    )
                log.info("app %s: discarding pid file (%s)", self.app.name, verdict.why)
                await asyncio.to_thread(procfiles.remove, self.pid_file)
                # A process that cannot be inspected may still run: its files are not stale.
                dead = None if verdict.unknown else verdict.why
            removed = await self._remove_stale(dead)
            status = await self._spawn()
            if removed:
                note = ", ".join(f"removed stale {path}" for path in removed)
                status = status.model_copy(update={"message": f"{status.message}; {note}"})
            return status

    async def _remove_stale(self, dead: str | None) -> list[str]:
        """Remove the app's ``stale_files`` once its previous instance is known dead (``dead``
        says why it is); the paths removed."""
        if not self.app.stale_files:
            return []
        if dead is None:
            log.warning(
                "app %s: its previous instance is not known dead; stale files are kept",
                self.app.name,
            )
            return []
        removed = await asyncio.to_thread(procfiles.remove_stale, self.app)
        for path in removed:
            log.info(
                "app %s: removed stale %s before the start (previous instance dead: %s)",
                self.app.name, path, dead,
            )  # fmt: skip
        return removed

    async def stop(self) -> AppStatus:
        async with self._lock:
            record = await asyncio.to_thread(procfiles.read_record, self.pid_file)
            if record is None:
                return AppStatus(state=AppState.STOPPED, message="already stopped")
            verdict = await asyncio.to_thread(self._check, record)
            if not verdict.alive:
                await asyncio.to_thread(procfiles.remove, self.pid_file)
                return AppStatus(state=AppState.STOPPED, message=f"already stopped: {verdict.why}")
            how = await self._terminate(record)
            await asyncio.to_thread(procfiles.remove, self.pid_file)
            code = self._exit_code(record.pid)
            if code is not None:
                how += f"; exit code {code}"
            log.info("app %s stopped (pid %d): %s", self.app.name, record.pid, how)
            return AppStatus(state=AppState.STOPPED, message=f"stopped: {how}")

    async def _spawn(self) -> AppStatus:
        app = self.app
        assert app.start is not None
        try:
            child = await asyncio.to_thread(procfiles.spawn, app)
        except KeyError:  # removed from the system since the config was loaded
            raise ControlError(
                f"app {app.name}: user {app.user!r} or group {app.group!r} no longer exists"
            ) from None
        except OSError as exc:
            what = f"{exc.strerror}: {exc.filename}" if exc.filename else str(exc)
            raise ControlError(f"app {app.name}: cannot run {app.start[0]!r}: {what}") from exc
        self._child = child
        created = await asyncio.to_thread(procfiles.create_time, child.pid)
        ticks = await asyncio.to_thread(procfiles.start_ticks, child.pid)
        # Recorded before the settle, so an agent that dies now can still adopt the process.
        await asyncio.to_thread(
            procfiles.write_record, self.pid_file, Record(child.pid, created or 0.0, ticks)
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settle_s
        # Polled (waitpid WNOHANG, which does not block) so an early exit fails the start at once.
        while True:
            code = child.poll()
            if code is not None or loop.time() >= deadline:
                break
            await asyncio.sleep(self._poll_s)
        if code is not None:
            await asyncio.to_thread(procfiles.remove, self.pid_file)
            tail = await asyncio.to_thread(procfiles.log_tail, app.log_file)
            raise ControlError(
                f"app {app.name} exited at once with exit code {code}; last log lines: {tail}"
            )
        log.info("app %s started (pid %d)", app.name, child.pid)
        return AppStatus(state=AppState.RUNNING, pid=child.pid, message="started")

    async def _terminate(self, record: Record) -> str:
        """Stop the recorded (verified live) process group; say how it went."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.app.stop_grace_s
        sig = signal.Signals[f"SIG{self.app.stop_signal}"]
        how = f"{sig.name} to the process group"
        if self.app.stop is not None:
            if await self._run_stop_command(deadline):
                how = f"stop command {self.app.stop[0]!r}"
            else:
                procfiles.signal_group(record.pid, sig)
        else:
            procfiles.signal_group(record.pid, sig)
        if await self._wait_gone(record, deadline):
            # Members of the group still there once the leader has gone had the same signal and
            # as long; end them so nothing of the app keeps holding its files or ports.
            procfiles.signal_group(record.pid, signal.SIGKILL)
            return how
        log.warning(
            "app %s (pid %d) still running after %gs; sending SIGKILL",
            self.app.name,
            record.pid,
            self.app.stop_grace_s,
        )
        procfiles.signal_group(record.pid, signal.SIGKILL)
        if await self._wait_gone(record, loop.time() + _KILL_WAIT_S):
            return f"killed with SIGKILL after {self.app.stop_grace_s:g}s grace"
        raise ControlError(
            f"app {self.app.name} (pid {record.pid}) did not exit even after SIGKILL"
        )

    async def _run_stop_command(self, deadline: float) -> bool:
        """Run the configured stop command within the grace; False if it failed."""
        argv = self.app.stop
        assert argv is not None
        remaining = max(deadline - asyncio.get_running_loop().time(), 0.1)
        try:
            who = procfiles.run_as(self.app)  # the stop command runs as the app's user too
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=self.app.cwd,
                env=procfiles.environment(self.app, who),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
                **who.popen,
            )
        except (OSError, KeyError) as exc:
            log.warning("app %s: cannot run stop command: %s", self.app.name, exc)
            return False
        try:
            rc = await asyncio.wait_for(proc.wait(), remaining)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            log.warning("app %s: stop command did not finish in time", self.app.name)
            return False
        if rc != 0:
            log.warning("app %s: stop command exited %d", self.app.name, rc)
            return False
        return True

    async def _wait_gone(self, record: Record, deadline: float) -> bool:
        loop = asyncio.get_running_loop()
        while True:
            verdict = await asyncio.to_thread(self._check, record)
            if not verdict.alive:
                return True
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(self._poll_s)

    def _check(self, record: Record) -> procfiles.Verdict:
        """Whether the recorded process lives (blocking: run in a thread). Reaps it if it is a
        child of ours, so it does not linger as a zombie."""
        if self._child is not None and self._child.pid == record.pid:
            self._child.poll()
            return procfiles.check(record)
        verdict = procfiles.check(record)
        if verdict.zombie:
            # Only after the creation time matched: the pid is surely the recorded process.
            procfiles.reap(record.pid)
        return verdict

    def _exit_code(self, pid: int) -> int | None:
        if self._child is not None and self._child.pid == pid:
            return self._child.poll()
        return None
