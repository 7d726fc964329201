"""Real processes of the chaos topology, as a supervisor (systemd, Restart=always) runs them.

Every process here is a real OS process (``python -m tandem.agent``, ``python -m
tandem.orchestrator``, nats-server). A ``Proc`` remembers each of its exits and whether the
nemesis caused it (SIGKILL) or not (a crash: checker (e) reads ``unexpected_exits``). Its log
is appended to across restarts; ``log_since(offset)`` reads what was written after a point.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)


@dataclass
class Exit:
    """One end of a process: its code, when, and whether the nemesis caused it."""

    name: str
    pid: int
    code: int | None
    at: float
    expected: bool
    log_offset: int
    #: How it ended, when the harness knows more than the code (a SIGTERM that did not work).
    note: str = ""


@dataclass
class Proc:
    """A supervised process (agent or orchestrator); ``start`` again restarts it."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    popen: subprocess.Popen[bytes] | None = None
    exits: list[Exit] = field(default_factory=list)
    #: Set by the nemesis before it kills the process: the next exit is expected.
    expect_exit: bool = False
    #: Held down by the nemesis (not restarted by the supervisor until cleared).
    held: bool = False
    #: Where the current run's output starts in the log.
    started_offset: int = 0

    def start(self) -> Proc:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.started_offset = self.log_size()
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
            )
        self.expect_exit = False
        log.info("started %s pid %d", self.name, self.popen.pid)
        return self

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_size(self) -> int:
        try:
            return self.log.stat().st_size
        except OSError:
            return 0

    def log_since(self, offset: int) -> str:
        try:
            with self.log.open("rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def reap(self) -> Exit | None:
        """Record the exit of a process that has ended (once)."""
        if self.popen is None or self.popen.poll() is None:
            return None
        ended = Exit(
            self.name,
            self.popen.pid,
            self.popen.returncode,
            time.time(),
            self.expect_exit,
            self.started_offset,
        )
        guard_says = f"killing the agent (pid {ended.pid})"
        if (
            not ended.expected
            and ended.code == -9
            and guard_says in self.log_since(ended.log_offset)
        ):
            # The loopback stand-in's public port is a socket of the agent: its node guard
            # SIGKILLs an agent frozen while it holds it (by design, logged as such).
            ended.expected = True
            ended.note = "SIGKILLed by its node guard (frozen while holding the public port)"
        self.exits.append(ended)
        self.popen = None
        if not ended.expected:
            log.warning("%s (pid %d) exited by itself with %s", self.name, ended.pid, ended.code)
        return ended

    def kill(self) -> None:
        """SIGKILL, as a crash or power loss would; the exit is expected."""
        if self.running():
            assert self.popen is not None
            self.expect_exit = True
            self.popen.send_signal(signal.SIGCONT)
            self.popen.kill()
            self.popen.wait(10)
        self.reap()

    def pause(self) -> None:
        if self.running():
            assert self.popen is not None
            self.popen.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.running():
            assert self.popen is not None
            self.popen.send_signal(signal.SIGCONT)

    def stop(self, timeout: float = 35) -> int | None:
        """SIGTERM (then SIGKILL after ``timeout``: longer than an agent's own stop deadline,
        ``[shutdown] deadline_s`` = 30 s, which it promises to keep); the exit code, recorded
        as an exit not caused by a fault when it is neither 0 nor -SIGTERM."""
        if not self.running():
            self.reap()
            return None
        assert self.popen is not None
        self.popen.send_signal(signal.SIGCONT)
        self.popen.terminate()
        note = ""
        try:
            code = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            code = self.popen.wait(10)
            note = f"did not stop within {timeout}s of SIGTERM: SIGKILLed"
            log.warning("%s %s", self.name, note)
        self.expect_exit = code in (0, -signal.SIGTERM)
        ended = self.reap()
        if ended is not None:
            ended.note = note or ("" if ended.expected else f"exited with {code} on SIGTERM")
        return code
