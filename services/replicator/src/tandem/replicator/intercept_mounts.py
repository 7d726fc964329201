"""Intercept's FUSE mounts as the mount table shows them, and what a killed agent leaves.

Each mount is named ``tandem-intercept:<pid>`` (its fsname: the ``source`` field of
``/proc/self/mountinfo``), so whether the process that serves it still lives is known
without touching the mount. Touching a mount whose daemon is frozen or dying blocks the
caller in the kernel for good: a request the daemon had read before it died is waited on
uninterruptibly, and such a waiter keeps the dead daemon's process from ending (seen: an
agent SIGKILLed while one of its own threads read its mount stayed a zombie holding the
public port, and postgres's backends hung in D state).

``clear_dead_mount`` aborts the connection of a mount whose daemon is gone (through
fusectl: every waiter gets ENOTCONN, the dead process can end) and unmounts it lazily.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

FSNAME = "tandem-intercept"
FUSECTL = Path("/sys/fs/fuse/connections")
#: What statvfs(2) says on a FUSE mount whose daemon died (ENOTCONN), or was aborted.
_DEAD = (errno.ENOTCONN, errno.ECONNABORTED)


class MountError(Exception):
    """A mount of ours cannot be used or removed; the message says why."""


def fsname_for(pid: int) -> str:
    return f"{FSNAME}:{pid}"


@dataclass(frozen=True)
class OurMount:
    mount_id: int
    #: The fusectl connection name (the minor of the mount's device).
    connection: str
    #: The process that mounted it (None: a mount of an older version, named without it).
    pid: int | None


def our_mounts(mountpoint: Path) -> list[OurMount]:
    """The intercept mounts at ``mountpoint`` (read from the mount table only)."""
    found: list[OurMount] = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return found
    for line in lines:
        # id parent major:minor root mountpoint options [optional...] - fstype source super
        fields = line.split()
        try:
            sep = fields.index("-")
        except ValueError:
            continue
        if len(fields) < sep + 3 or _unescape(fields[4]) != str(mountpoint):
            continue
        source = _unescape(fields[sep + 2])
        if not fields[sep + 1].startswith("fuse") or source.split(":")[0] != FSNAME:
            continue
        _, _, tail = source.partition(":")
        pid = int(tail) if tail.isdigit() else None
        found.append(OurMount(int(fields[0]), fields[2].split(":")[1], pid))
    return found


def serving(pid: int) -> bool:
    """Whether ``pid`` can still serve a FUSE mount: it holds /dev/fuse open. A dead daemon
    may linger as a zombie (no descriptors), and its pid may be reused by another process
    (which holds no /dev/fuse of ours, or at least did not mount this)."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/fuse":
                return True
        except OSError:
            continue
    return False


def abort_connection(connection: str) -> bool:
    """Sever a FUSE connection through fusectl (mounted here when it is not): every request
    waiting on it fails with ENOTCONN. False when that cannot be done (the reason logged)."""
    abort = FUSECTL / connection / "abort"
    if not abort.parent.exists() and FUSECTL.is_dir() and not any(FUSECTL.iterdir()):
        subprocess.run(["mount", "-t", "fusectl", "fusectl", str(FUSECTL)],
                       capture_output=True, timeout=10)  # fmt: skip
    try:
        abort.write_text("1")
    except OSError as exc:
        log.warning("intercept: cannot abort the FUSE connection (%s): %s", abort, exc)
        return False
    return True


def clear_dead_mount(path: Path | str, timeout_s: float = 10.0) -> str:
    """Remove an intercept mount at ``path`` whose daemon is gone: an agent killed while it
    was the source leaves one behind, and nothing can use the folder (capture, apply, the
    application) until it is gone. A mount served by another live process is refused: two
    captures of one folder would journal it twice. Returns what was done ('' if nothing)."""
    where = Path(os.path.abspath(path))
    said: list[str] = []
    for mount in our_mounts(where):
        if mount.pid == os.getpid():
            raise MountError(f"{where} is still mounted by this process (a capture not stopped)")
        if mount.pid is not None:
            if serving(mount.pid):
                raise MountError(
                    f"{where} is already captured by another live intercept mount "
                    f"(process {mount.pid}: a second agent for this folder?)"
                )
            why = f"its process {mount.pid} is gone"
        else:
            why = _probe_legacy(where)
        aborted = abort_connection(mount.connection)
        _unmount_lazily(where, timeout_s, why)
        said.append(
            f"removed the dead intercept mount of a previous run at {where} ({why}"
            + ("; its connection aborted" if aborted else "")
            + ")"
        )
    for line in said:
        log.warning("intercept: %s", line)
    return "; ".join(said)


def _probe_legacy(where: Path) -> str:
    """A mount named without its pid: ask it (statvfs always reaches the daemon)."""
    try:
        os.statvfs(where)
    except OSError as exc:
        if exc.errno not in _DEAD:
            raise MountError(f"{where} is not usable: {exc}") from exc
        return exc.strerror or str(exc)
    raise MountError(
        f"{where} is already captured by another live intercept mount "
        "(a second agent for this folder?)"
    )


def _unmount_lazily(where: Path, timeout_s: float, why: str) -> None:
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    cmd = [tool, "-uz", str(where)] if tool else ["umount", "-l", str(where)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0 and our_mounts(where):
        raise MountError(
            f"a dead intercept mount at {where} ({why}) could not be removed: "
            f"{' '.join(cmd)}: {done.stderr.strip()}"
        )


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes (\\040 ...)."""
    if "\\" not in field:
        return field
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 4 <= len(field) and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)
