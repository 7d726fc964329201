"""Each chaos node's data filesystem: the disk its protected folder lives on, and what the
nemesis does to it (fill it, slow it down).

A node's disk is an ext4 image of ``disk_mib`` MiB (a sparse file ``<node>/disk.img`` under the
topology's root) loop-mounted at ``<node>/disk``, the protected folder at ``<node>/disk/data``.
It is made with ``-m 0`` (no blocks reserved for root: the harness runs as root and
``fill_disk`` must still reach ENOSPC) and one inode per 4 KiB block (a record is a small
file: the inodes never run out before the blocks). Where loop mounting is refused it is a
tmpfs of the same size, and where mounting is refused at all (not root) a plain folder, with
no ``fill_disk`` (a warning says which).

Each node also has a blkio cgroup (cgroup v1, ``/sys/fs/cgroup/blkio/tandem-chaos-<pid>-<node>``)
that its agent joins from its start (``join_argv``: the agent's argv run through ``sh -c``,
which writes its pid to ``cgroup.procs`` and ``exec``s the agent, keeping the pid) and so do
its children (the app, the replicator's processes). ``slow`` sets the cgroup's
``blkio.throttle.*_device`` limits on the loop device (MAJ:MIN) and ``unslow`` writes 0 to
them (no limit): a slow disk for that node's own writes (the app's fsyncs on the Active, the
replica apply on the Passive), nobody else's. No blkio controller, or no block device of its
own (tmpfs, folder): agents start as before and ``slow`` raises ``DiskUnavailable``.

``close`` unmounts (lazily when busy; the loop device is released with the last user,
autoclear) and removes the cgroups (moving what is left in one to its parent first). A run
that never reached ``close`` (SIGKILLed) has its mounts and cgroups swept by the next one
(``sweep``: only ours, whose owner pid is gone).
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import logging
import os
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger(__name__)

#: The size of each node's data filesystem by default: the workload writes 10-20 records/s,
#: one 4 KiB block each (<= 80 KiB/s: < 1 MiB in a 12 s scenario, ~5 MiB in the longest a
#: test runs); a test runs a few scenarios.
DISK_MIB = 64
#: What ``fill_disk`` leaves free: a couple of records fit, the next write gets ENOSPC.
DISK_LEAVE = 8 * 1024
BALLAST = "ballast"
IMAGE = "disk.img"
OWNER = ".tandem-chaos-owner"
BLKIO = Path("/sys/fs/cgroup/blkio")
CGROUP_PREFIX = "tandem-chaos-"
#: slow() keyword -> the cgroup v1 throttle file it sets.
THROTTLES = {
    "write_iops": "blkio.throttle.write_iops_device",
    "write_bps": "blkio.throttle.write_bps_device",
    "read_iops": "blkio.throttle.read_iops_device",
    "read_bps": "blkio.throttle.read_bps_device",
}


class DiskUnavailable(RuntimeError):
    """The fault cannot be applied to this node's disk (no filesystem, device or cgroup)."""


def disk_mib_for(scenarios: int) -> int:
    """A data filesystem that holds ``scenarios`` scenarios' records comfortably (a run keeps
    one topology: the records add up; < 1 MiB a scenario, twice that and more to be safe)."""
    return max(DISK_MIB, 32 + 2 * scenarios)


def _run(*argv: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=timeout, check=False
    )


class NodeDisks:
    """The data filesystems and blkio cgroups of a topology's nodes (under ``root``)."""

    def __init__(self, root: Path, disk_mib: int = DISK_MIB, keep: bool = False) -> None:
        self.root, self.disk_mib, self.keep = root, disk_mib, keep
        #: node -> its data filesystem's mount point (only those actually mounted).
        self.mounts: dict[str, Path] = {}
        #: node -> "ext4 on loop" / "tmpfs" / "folder".
        self.kinds: dict[str, str] = {}
        #: node -> "MAJ:MIN" of its loop device.
        self.devices: dict[str, str] = {}
        #: node -> its blkio cgroup's folder.
        self.cgroups: dict[str, Path] = {}
        #: node -> the throttles set now (slow() keyword -> value).
        self.slowed: dict[str, dict[str, int]] = {}
        self._atexit = False

    def disk_dir(self, node: str) -> Path:
        return self.root / node / "disk"

    def data_dir(self, node: str) -> Path:
        return self.disk_dir(node) / "data"

    # -- building ------------------------------------------------------------------------------

    def mount(self, node: str) -> str:
        """``node``'s data filesystem at ``disk_dir(node)`` with the data folder in it, and its
        cgroup; what the disk is ("ext4 on loop", "tmpfs" or "folder")."""
        disk = self.disk_dir(node)
        disk.mkdir(parents=True, exist_ok=True)
        if node not in self.kinds:
            if not self._atexit:
                atexit.register(self.close)  # close() not reached: still unmounted
                self._atexit = True
            self.kinds[node] = self._mount(node, disk)
            if node in self.mounts:
                (disk / OWNER).write_text(f"{os.getpid()}\n")
            self._make_cgroup(node)
        self.data_dir(node).mkdir(parents=True, exist_ok=True)
        return self.kinds[node]

    def _mount(self, node: str, disk: Path) -> str:
        image = self.root / node / IMAGE
        why = self._mount_loop(node, image, disk)
        if why is None:
            return "ext4 on loop"
        image.unlink(missing_ok=True)
        done = _run("mount", "-t", "tmpfs", "-o", f"size={self.disk_mib}m,mode=0755", "tmpfs", disk)
        if done.returncode == 0:
            self.mounts[node] = disk
            log.warning("%s's disk: a tmpfs (no loop device: %s); no slow-disk", node, why)
            return "tmpfs"
        log.warning(
            "%s's disk: a plain folder (%s; %s); no fill-disk or slow-disk",
            node,
            why,
            done.stderr.strip(),
        )
        return "folder"

    def _mount_loop(self, node: str, image: Path, disk: Path) -> str | None:
        """Make and loop-mount the ext4 image; None when done, else why not."""
        try:
            with image.open("wb") as f:
                f.truncate(self.disk_mib << 20)
        except OSError as exc:
            return f"image: {exc}"
        opts = "lazy_itable_init=0,lazy_journal_init=0"  # no background writes after mount
        made = _run("mkfs.ext4", "-q", "-F", "-m", "0", "-i", "4096", "-E", opts, image)
        if made.returncode != 0:
            return f"mkfs.ext4: {made.stderr.strip() or made.returncode}"
        done = _run("mount", "-o", "loop", image, disk, timeout=20)
        if done.returncode != 0:
            return f"mount -o loop: {done.stderr.strip() or done.returncode}"
        self.mounts[node] = disk
        device = _mount_source(disk)
        try:
            rdev = os.stat(device).st_rdev if device else 0
        except OSError:
            rdev = 0
        if rdev:
            self.devices[node] = f"{os.major(rdev)}:{os.minor(rdev)}"
        else:
            log.warning("%s's disk: loop device of %s not found: no slow-disk", node, disk)
        log.info("%s's disk: ext4 on %s (%s) at %s", node, device, self.devices.get(node), disk)
        return None

    def _make_cgroup(self, node: str) -> None:
        if not (BLKIO / THROTTLES["write_iops"]).exists():
            log.warning("no cgroup v1 blkio controller at %s: no slow-disk for %s", BLKIO, node)
            return
        group = BLKIO / f"{CGROUP_PREFIX}{os.getpid()}-{node}"
        try:
            group.mkdir(exist_ok=True)
        except OSError as exc:
            log.warning("no blkio cgroup for %s (%s): no slow-disk", node, exc)
            return
        self.cgroups[node] = group

    def join_argv(self, node: str, argv: list[str]) -> list[str]:
        """``argv`` run in ``node``'s blkio cgroup from its first instruction (a shell writes
        its pid to the cgroup and ``exec``s ``argv``: same pid, signals reach it); ``argv``
        itself when there is no cgroup. If joining fails the process says so on stderr and
        runs anyway (``slow`` then finds it outside and does not count the fault applied)."""
        group = self.cgroups.get(node)
        if group is None:
            return argv
        procs = shlex.quote(str(group / "cgroup.procs"))
        script = (
            f'echo $$ > {procs} || echo "tandem-chaos: not in the blkio cgroup {procs}" >&2; '
            'exec "$@"'
        )
        return ["sh", "-c", script, "sh", *argv]

    # -- space ---------------------------------------------------------------------------------

    def free(self, node: str) -> int:
        st = os.statvfs(self.disk_dir(node))
        return st.f_bavail * st.f_frsize

    def fill(self, node: str, leave: int = DISK_LEAVE) -> dict[str, Any]:
        """Write a ballast file beside ``node``'s protected folder (same filesystem, outside
        the folder) until about ``leave`` bytes are left free; what was done, for the fault."""
        disk = self.mounts.get(node)
        if disk is None or not os.path.ismount(disk):
            raise DiskUnavailable(f"{node}'s data folder is not on a filesystem of its own")
        ballast = disk / BALLAST
        st = os.statvfs(disk)
        before = self.free(node)
        chunk = b"\0" * (1 << 20)
        fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            while (want := self.free(node) - leave) > 0:
                try:
                    os.write(fd, chunk[: min(want, len(chunk))])
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break  # the workload took the last blocks meanwhile
            if self.free(node) < leave:  # full to the last block: give ``leave`` back
                os.ftruncate(fd, max(0, os.fstat(fd).st_size - leave))
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        after = self.free(node)
        log.info("%s's disk filled: %d bytes of ballast, %d bytes free", node, size, after)
        return {
            "node": node,
            "disk": self.kinds.get(node),
            "ballast": str(ballast),
            "disk_bytes": st.f_blocks * st.f_frsize,
            "free_before": before,
            "ballast_bytes": size,
            "free_after": after,
        }

    def free_ballast(self, node: str) -> int:
        """Delete the ballast; the bytes free after."""
        disk = self.mounts.get(node)
        if disk is not None:
            (disk / BALLAST).unlink(missing_ok=True)
            return self.free(node)
        return 0

    # -- speed ---------------------------------------------------------------------------------

    def pids(self, node: str) -> list[int]:
        """The processes in ``node``'s cgroup now."""
        group = self.cgroups.get(node)
        if group is None:
            return []
        try:
            return [int(p) for p in (group / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            return []

    def write_ios(self, node: str) -> int | None:
        """The write IOs ``node``'s cgroup issued to its loop device so far (throttle
        accounting), None when unknown."""
        group, device = self.cgroups.get(node), self.devices.get(node)
        if group is None or device is None:
            return None
        try:
            lines = (group / "blkio.throttle.io_serviced").read_text().splitlines()
        except OSError:
            return None
        for line in lines:
            fields = line.split()
            if len(fields) == 3 and fields[0] == device and fields[1] == "Write":
                return int(fields[2])
        return 0

    def slow(
        self,
        node: str,
        write_iops: int | None = None,
        write_bps: int | None = None,
        read_iops: int | None = None,
        read_bps: int | None = None,
    ) -> dict[str, Any]:
        """Throttle what ``node``'s processes do to its disk; what was set, for the fault."""
        group, device = self.cgroups.get(node), self.devices.get(node)
        if group is None:
            raise DiskUnavailable(f"{node} has no blkio cgroup (no cgroup v1 blkio controller)")
        if device is None:
            raise DiskUnavailable(f"{node}'s disk is not a block device ({self.kinds.get(node)})")
        wanted = {"write_iops": write_iops, "write_bps": write_bps}
        wanted |= {"read_iops": read_iops, "read_bps": read_bps}
        limits = {k: int(v) for k, v in wanted.items() if v}
        if not limits:
            raise ValueError("slow() with no limit")
        for key, value in limits.items():
            (group / THROTTLES[key]).write_text(f"{device} {value}\n")
        self.slowed[node] = limits
        log.info("%s's disk slowed: %s on %s (cgroup %s)", node, limits, device, group.name)
        return {
            "node": node,
            "disk": self.kinds.get(node),
            "device": device,
            "cgroup": str(group),
            "throttle": limits,
            "pids_in_cgroup": self.pids(node),
            "write_ios_before": self.write_ios(node),
        }

    def unslow(self, node: str) -> dict[str, Any]:
        """Clear ``node``'s throttles (0: no limit); what was cleared."""
        group, device = self.cgroups.get(node), self.devices.get(node)
        limits = self.slowed.pop(node, {})
        if group is None or device is None:
            return {"cleared": []}
        for key in limits:
            with contextlib.suppress(OSError):
                (group / THROTTLES[key]).write_text(f"{device} 0\n")
        log.info("%s's disk no longer slowed", node)
        return {"cleared": sorted(limits), "write_ios_after": self.write_ios(node)}

    # -- the end -------------------------------------------------------------------------------

    def close(self) -> None:
        """Unmount every data filesystem (lazily when busy; a kept run keeps a copy of each
        protected folder at ``<node>/data-kept``) and remove the cgroups."""
        for node in list(self.slowed):
            self.unslow(node)
        for node, disk in list(self.mounts.items()):
            if self.keep and self.data_dir(node).is_dir():
                with contextlib.suppress(OSError):
                    shutil.copytree(self.data_dir(node), self.root / node / "data-kept")
            unmount(disk)
            del self.mounts[node]
        for node, group in list(self.cgroups.items()):
            remove_cgroup(group)
            del self.cgroups[node]
        self.devices.clear()


def _mount_source(point: Path) -> str | None:
    """The device mounted at ``point`` (the last mount there), from /proc/mounts."""
    found = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) >= 2 and fields[1].replace("\\040", " ") == str(point):
                found = fields[0]
    return found


def unmount(path: Path) -> None:
    """``umount``, or ``umount -l`` when the filesystem is busy (a process still in it)."""
    done = _run("umount", path, timeout=20)
    if done.returncode != 0 and os.path.ismount(path):
        log.warning("umount %s: %s; lazily", path, done.stderr.strip())
        _run("umount", "-l", path, timeout=20)


def remove_cgroup(group: Path) -> bool:
    """Move what is left in ``group`` to its parent cgroup, then remove it; whether it is gone."""
    for _ in range(50):
        try:
            left = (group / "cgroup.procs").read_text().split()
        except FileNotFoundError:
            return True
        except OSError:
            left = []
        for pid in left:
            with contextlib.suppress(OSError):
                (group.parent / "cgroup.procs").write_text(f"{pid}\n")
        try:
            group.rmdir()
            return True
        except FileNotFoundError:
            return True
        except OSError:
            time.sleep(0.1)  # a process exiting or forking meanwhile
    log.warning("blkio cgroup %s could not be removed", group)
    return False


def sweep() -> list[str]:
    """Unmount the data filesystems and remove the blkio cgroups of chaos topologies whose
    owner process is gone (a run SIGKILLed before its ``close``). Only ours: ext4 or tmpfs
    mounts at ``tandem-chaos-*/<node>/disk`` holding an owner file (and the image beside),
    cgroups named ``tandem-chaos-<pid>-<node>``."""
    swept = []
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        mounts = []
    for line in mounts:
        fields = line.split()
        if len(fields) < 3 or fields[2] not in ("tmpfs", "ext4"):
            continue
        point = Path(fields[1].replace("\\040", " "))
        if point.name != "disk" or not point.parent.parent.name.startswith(CGROUP_PREFIX):
            continue
        try:
            owner = int((point / OWNER).read_text().strip())
        except (OSError, ValueError):
            continue
        if owner == os.getpid() or psutil.pid_exists(owner):
            continue
        log.warning("a chaos run's data filesystem left mounted (owner %d gone): %s", owner, point)
        unmount(point)
        (point.parent / IMAGE).unlink(missing_ok=True)
        swept.append(str(point))
    with contextlib.suppress(OSError):
        for group in BLKIO.glob(f"{CGROUP_PREFIX}*"):
            owner_s = group.name[len(CGROUP_PREFIX) :].split("-", 1)[0]
            if not group.is_dir() or not owner_s.isdigit():
                continue
            owner = int(owner_s)
            if owner == os.getpid() or psutil.pid_exists(owner):
                continue
            log.warning("a chaos run's blkio cgroup left (owner %d gone): %s", owner, group)
            if remove_cgroup(group):
                swept.append(str(group))
    return swept
