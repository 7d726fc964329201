"""A server process for tests whose output goes to a log file, and the wait for its
"ready" line.

``LoggedProcess.start(name, argv, log_path)`` starts ``argv`` in its own session with stdout
and stderr appended to ``log_path`` (a restart appends to the same log) and remembers where
its output begins. ``wait_for(pattern, timeout)`` then reads that new part of the log until a
complete line matches ``pattern`` (``re.search``, one line at a time) and returns the match;
it raises ``error`` with the end of the log when the process exits first, or when it times
out (the process is stopped then). ``stop()`` sends SIGTERM, then SIGKILL if need be.

Used by ``bind_rig`` (named) and ``vcsim_rig`` (the vCenter simulator).
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ProcessRigError(RuntimeError):
    """The process did not get ready; the message has the end of its log."""


def tail(text: str, lines: int = 20) -> str:
    return "\n".join(text.splitlines()[-lines:])


@dataclass
class LoggedProcess:
    #: For messages ("named exited with 1: ...").
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    #: Where this process's output begins in the log.
    log_offset: int

    @classmethod
    def start(cls, name: str, argv: Sequence[str], log_path: Path, **popen: Any) -> LoggedProcess:
        """Start ``argv`` (in a new session, stdin from /dev/null) logging to ``log_path``."""
        offset = log_path.stat().st_size if log_path.exists() else 0
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                list(argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in a terminal reaches pytest, not the server
                **popen,
            )
        return cls(name, process, log_path, offset)

    def new_log(self) -> str:
        """What this process has written to the log so far."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(self.log_offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for(
        self,
        pattern: str | re.Pattern[str],
        timeout: float,
        error: Callable[[str], Exception] = ProcessRigError,
        poll_s: float = 0.05,
    ) -> re.Match[str]:
        """The match of the first complete line of the new log that ``pattern`` matches."""
        ready = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            exited = self.process.poll() is not None  # before reading: its last lines count
            text = self.new_log()
            for line in text[: text.rfind("\n") + 1].splitlines():
                if match := ready.search(line):
                    return match
            if exited:
                raise error(f"{self.name} exited with {self.process.returncode}:\n{tail(text)}")
            if time.monotonic() >= deadline:
                self.stop()
                raise error(f"{self.name} not ready after {timeout}s:\n{tail(self.new_log())}")
            time.sleep(poll_s)

    def is_running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL when it has not exited within ``timeout`` seconds."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
