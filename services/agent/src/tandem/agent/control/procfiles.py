"""Blocking helpers of ProcessControl (pid file, spawning, psutil checks, signals); the async
side calls them through ``asyncio.to_thread`` where they may block."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import psutil

if TYPE_CHECKING:
    from tandem.agent.control.config import ApplicationConfig

log = logging.getLogger(__name__)

# Creation times are compared with some slack: psutil derives them from the boot time, which
# moves slightly when the clock is stepped. A reused pid is never within it: the pid space has
# to wrap around between the two processes.
_CREATE_TIME_SLACK_S = 1.0
_LOG_TAIL_BYTES = 4096
_LOG_TAIL_LINES = 10


class Record(NamedTuple):
    pid: int
    create_time: float


class Verdict(NamedTuple):
    alive: bool
    why: str
    # The recorded process itself, exited but not yet reaped.
    zombie: bool = False


def read_record(path: Path) -> Record | None:
    try:
        text = path.read_text(encoding="ascii")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("cannot read pid file %s: %s", path, exc)
        return None
    parts = text.split()
    try:
        return Record(int(parts[0]), float(parts[1]))
    except (IndexError, ValueError):
        log.warning("ignoring malformed pid file %s: %r", path, text[:100])
        return None


def write_record(path: Path, record: Record) -> None:
    """Write the pid file atomically, so a crash never leaves a half-written one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="ascii") as f:
        f.write(f"{record.pid} {record.create_time:.6f}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)


def spawn(app: ApplicationConfig) -> subprocess.Popen[bytes]:
    """Start the application in a new session (its own process group), output to its log."""
    assert app.start is not None
    log_fd: int | None = None
    if app.log_file is not None:
        app.log_file.parent.mkdir(parents=True, exist_ok=True)
        log_fd = os.open(app.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        # subprocess.Popen rather than asyncio's: an asyncio subprocess transport kills its
        # child when closed or garbage-collected, and the application must outlive the agent.
        return subprocess.Popen(
            app.start,
            cwd=app.cwd,
            env={**os.environ, **app.env},
            stdin=subprocess.DEVNULL,
            stdout=log_fd if log_fd is not None else subprocess.DEVNULL,
            stderr=subprocess.STDOUT if log_fd is not None else subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
    finally:
        if log_fd is not None:
            os.close(log_fd)


def create_time(pid: int) -> float | None:
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def check(record: Record) -> Verdict:
    """Whether the recorded process is alive and is the one that was recorded."""
    try:
        proc = psutil.Process(record.pid)
        created = proc.create_time()
        status = proc.status()
    except psutil.NoSuchProcess:
        return Verdict(False, f"process {record.pid} has exited")
    except psutil.AccessDenied:
        # Not verifiable, so neither adopted nor signalled.
        return Verdict(False, f"process {record.pid} cannot be inspected (access denied)")
    if abs(created - record.create_time) > _CREATE_TIME_SLACK_S:
        return Verdict(
            False, f"process {record.pid} has exited (its pid now belongs to another process)"
        )
    if status == psutil.STATUS_ZOMBIE:
        return Verdict(False, f"process {record.pid} has exited", zombie=True)
    return Verdict(True, "running")


def reap(pid: int) -> None:
    """Collect an exited child so it does not stay a zombie (no-op if it is not our child)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Signal a whole process group; one that no longer exists is fine."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass
    except PermissionError as exc:
        log.warning("cannot send %s to process group %d: %s", sig.name, pgid, exc)


def log_tail(path: Path | None) -> str:
    if path is None:
        return "(no log_file configured)"
    try:
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(f.tell() - _LOG_TAIL_BYTES, 0))
            data = f.read()
    except OSError as exc:
        return f"(cannot read {path}: {exc.strerror or exc})"
    lines = [ln.strip() for ln in data.decode(errors="replace").splitlines() if ln.strip()]
    return " | ".join(lines[-_LOG_TAIL_LINES:]) or "(log is empty)"
