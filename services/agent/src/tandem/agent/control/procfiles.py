"""Blocking helpers of ProcessControl (pid file, spawning, psutil checks, signals); the async
side calls them through ``asyncio.to_thread`` where they may block."""

from __future__ import annotations

import contextlib
import grp
import logging
import os
import pwd
import signal
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import psutil

if TYPE_CHECKING:
    from tandem.agent.control.config import ApplicationConfig

log = logging.getLogger(__name__)

# A process is known by its start in clock ticks since boot (/proc/<pid>/stat field 22): it
# never changes. psutil's creation time is that plus the boot time, which the kernel derives
# from the wall clock: a stepped clock moves it (a chaos run saw 9 s), and the live application
# was then taken for a reused pid, "already stopped", and left serving on a Passive. The
# creation time, compared with some slack, is only the fallback (no /proc, an old pid file).
_CREATE_TIME_SLACK_S = 1.0
_STAT_STARTTIME = 19  # field 22 of /proc/<pid>/stat, counted from field 3 (after the ")")
_LOG_TAIL_BYTES = 4096
_LOG_TAIL_LINES = 10


class Record(NamedTuple):
    pid: int
    create_time: float
    #: The start in clock ticks since boot (None: unknown, e.g. a pid file of an older agent).
    start_ticks: int | None = None


class Verdict(NamedTuple):
    alive: bool
    why: str
    # The recorded process itself, exited but not yet reaped.
    zombie: bool = False
    # Neither alive nor known dead: the process could not be inspected.
    unknown: bool = False


class RunAs(NamedTuple):
    """Who a spawned process runs as: ``Popen`` keywords and the login variables."""

    popen: dict[str, Any]
    env: dict[str, str]


def lookup_user(user: str) -> pwd.struct_passwd:
    """The passwd entry of a user name or numeric id; KeyError when there is none."""
    if not user or "\x00" in user:
        raise KeyError(user)
    return pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)


def lookup_group(group: str) -> grp.struct_group:
    """The group entry of a group name or numeric id; KeyError when there is none."""
    if not group or "\x00" in group:
        raise KeyError(group)
    return grp.getgrgid(int(group)) if group.isdigit() else grp.getgrnam(group)


def run_as(app: ApplicationConfig) -> RunAs:
    """The identity ``app`` runs as (its ``user`` / ``group``; nothing set: the agent's).

    The supplementary groups are the user's own (``os.getgrouplist``), so none of the agent's
    carry over; HOME, USER and LOGNAME name the user unless ``env`` sets them. A user that is
    the agent's own (a non-root agent) changes nothing: setgroups would need root.
    """
    if app.user is None:
        return RunAs({}, {})
    pw = lookup_user(app.user)  # KeyError: gone since the config was loaded
    gid = lookup_group(app.group).gr_gid if app.group is not None else pw.pw_gid
    env = {"HOME": pw.pw_dir, "USER": pw.pw_name, "LOGNAME": pw.pw_name}
    if os.geteuid() != 0 and pw.pw_uid == os.geteuid() and gid == os.getegid():
        return RunAs({}, env)
    groups = os.getgrouplist(pw.pw_name, gid)
    return RunAs({"user": pw.pw_uid, "group": gid, "extra_groups": groups}, env)


def environment(app: ApplicationConfig, who: RunAs) -> dict[str, str]:
    """The agent's environment, then the user's login variables, then ``app.env``."""
    return {**os.environ, **who.env, **app.env}


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
        ticks = int(parts[2]) if len(parts) > 2 else None
        return Record(int(parts[0]), float(parts[1]), ticks)
    except (IndexError, ValueError):
        log.warning("ignoring malformed pid file %s: %r", path, text[:100])
        return None


def write_record(path: Path, record: Record) -> None:
    """Write the pid file atomically, so a crash never leaves a half-written one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="ascii") as f:
        ticks = "" if record.start_ticks is None else f" {record.start_ticks}"
        f.write(f"{record.pid} {record.create_time:.6f}{ticks}\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def remove(path: Path) -> None:
    path.unlink(missing_ok=True)


def spawn(app: ApplicationConfig) -> subprocess.Popen[bytes]:
    """Start the application in a new session (its own process group), output to its log,
    as its ``user`` (privileges dropped by Popen itself between fork and exec)."""
    assert app.start is not None
    who = run_as(app)
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
            env=environment(app, who),
            stdin=subprocess.DEVNULL,
            stdout=log_fd if log_fd is not None else subprocess.DEVNULL,
            stderr=subprocess.STDOUT if log_fd is not None else subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
            **who.popen,
        )
    finally:
        if log_fd is not None:
            os.close(log_fd)


def create_time(pid: int) -> float | None:
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def start_ticks(pid: int) -> int | None:
    """When ``pid`` started, in clock ticks since boot; None without /proc or once it exited."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
        return int(stat[stat.rindex(b")") + 2 :].split()[_STAT_STARTTIME])
    except (OSError, ValueError, IndexError):
        return None


def _same_process(record: Record, created: float) -> bool:
    if record.start_ticks is not None:
        ticks = start_ticks(record.pid)
        if ticks is not None:
            return ticks == record.start_ticks
    return abs(created - record.create_time) <= _CREATE_TIME_SLACK_S


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
        return Verdict(
            False, f"process {record.pid} cannot be inspected (access denied)", unknown=True
        )
    if not _same_process(record, created):
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


def remove_stale(app: ApplicationConfig) -> list[str]:
    """Remove ``app.stale_files`` (call only once its previous instance is known dead); the
    paths removed, as configured. A directory is left alone, with a warning."""
    removed: list[str] = []
    for configured in app.stale_files:
        path = configured if configured.is_absolute() or app.cwd is None else app.cwd / configured
        if not configured.is_absolute() and app.cwd is not None:
            # A symlinked directory on the way (it may come with replicated data) must not take
            # the removal outside cwd.
            where = os.path.realpath(path.parent)
            if os.path.commonpath([where, os.path.realpath(app.cwd)]) != os.path.realpath(app.cwd):
                log.warning(
                    "app %s: stale file %s lies outside cwd through a symlink (%s); not removed",
                    app.name, configured, where,
                )  # fmt: skip
                continue
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        except IsADirectoryError:
            log.warning("app %s: stale file %s is a directory; not removed", app.name, path)
            continue
        except OSError as exc:
            # The start goes on: the application says what is wrong if the file still matters.
            log.warning("app %s: cannot remove stale file %s: %s", app.name, path, exc)
            continue
        removed.append(str(configured))
    return removed


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
