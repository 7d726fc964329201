"""The agent's side of the node guard: starts it, tells it the deadline, notices when it is
gone and collects what it reported.

``send`` may be called from any thread (the lease keeper's renewal thread calls it after
each renewal): one short line written to a non-blocking pipe, so a guard that stopped reading
can never stall the caller. A failed write counts as a dead guard.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tandem.agent.guard.plan import FencePlan

log = logging.getLogger(__name__)

_READY_TIMEOUT_S = 40.0  # covers a previous guard still fencing (it holds the lock)


class GuardError(Exception):
    pass


class GuardLink:
    def __init__(self, plan: FencePlan, plan_path: Path) -> None:
        self.plan = plan
        self.plan_path = plan_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._write_lock = threading.Lock()
        self.broken = ""  # why the last write failed

    @property
    def report_dir(self) -> Path:
        return Path(self.plan.report_dir)

    async def start(self) -> None:
        await asyncio.to_thread(self._start)

    def _start(self) -> None:
        self.plan_path.parent.mkdir(parents=True, exist_ok=True)
        self.plan_path.write_text(self.plan.model_dump_json(indent=2), encoding="utf-8")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tandem.agent.guard", str(self.plan_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            # Its own session: a signal to the agent's process group does not reach it.
            start_new_session=True,
            close_fds=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        ready = _readline(self.proc.stdout, _READY_TIMEOUT_S)
        if ready != b"ready\n":
            code = self.proc.poll()
            raise GuardError(f"the node guard did not start (said {ready!r}, exit code {code})")
        os.set_blocking(self.proc.stdin.fileno(), False)
        self.broken = ""
        log.info("node guard started (pid %d)", self.proc.pid)

    def exit_code(self) -> int | None:
        """None while the guard runs."""
        if self.proc is None:
            return -1
        return self.proc.poll()

    def send(self, until: float | None, epoch: int = 0) -> bool:
        """Tell the guard the node may serve until ``until`` (None: it does not serve) at
        ``epoch`` (carried into its report)."""
        return self._write({"until": until, "epoch": epoch})

    def _write(self, message: dict[str, Any]) -> bool:
        proc = self.proc
        if proc is None or proc.stdin is None:
            return False
        line = (json.dumps(message) + "\n").encode()
        with self._write_lock:
            try:
                os.write(proc.stdin.fileno(), line)
                return True
            except (BlockingIOError, BrokenPipeError, OSError, ValueError) as exc:
                self.broken = f"{type(exc).__name__}: {exc}"
                return False

    def take_reports(self) -> list[dict[str, Any]]:
        """What the guard did since the last call, oldest first (the files are removed)."""
        reports = []
        try:
            names = sorted(p for p in self.report_dir.glob("fenced-*.json"))
        except OSError:
            return []
        for path in names:
            try:
                reports.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError) as exc:
                reports.append({"reason": f"unreadable guard report {path}: {exc}", "actions": []})
            path.unlink(missing_ok=True)
        return reports

    async def stop(self) -> None:
        """A clean stop: the agent has hidden the node; the guard exits without fencing."""
        proc = self.proc
        if proc is None:
            return
        self._write({"stop": True})
        try:
            await asyncio.to_thread(proc.wait, 5)
        except subprocess.TimeoutExpired:
            log.warning("node guard did not exit after stop; killing it")
            proc.kill()
            await asyncio.to_thread(proc.wait, 5)
        self.proc = None


def _readline(stream: Any, timeout_s: float) -> bytes:
    """One line from a pipe, or what came before ``timeout_s`` ran out (b'' if nothing)."""
    fd = stream.fileno()
    deadline = time.monotonic() + timeout_s
    got = b""
    while not got.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 1)  # byte by byte: nothing after the line is taken from the pipe
        if not chunk:
            break
        got += chunk
    return got
