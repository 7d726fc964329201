"""A bus partition of one node on the loopback topology: its agent (with its app) runs in a
cgroup v2 of its own from its first instruction, and ``cut`` adds an nftables rule that drops
every packet its sockets send to the NATS servers' client ports (``socket cgroupv2``); ``heal``
deletes the rule. The node stays up and its app keeps serving the public port: only the bus is
gone, as when a switch port or a firewall fails. Established connections stall (their
acknowledgements are dropped) and new ones never open, until the heal.

Needs root, nft and a cgroup v2 hierarchy (``/sys/fs/cgroup`` or ``/sys/fs/cgroup/unified``);
without them ``cut`` raises ``CutUnavailable`` with the reason and the nemesis records the fault
as not applied. The network-namespace topology (``chaos_netns``) partitions with namespaces
instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import psutil

log = logging.getLogger(__name__)

PREFIX = "tandem-chaos-net-"
#: nft matches a socket's cgroup by a path under this folder.
CGROUP_ROOT = Path("/sys/fs/cgroup")


class CutUnavailable(RuntimeError):
    """The partition cannot be made here (not root, no nft, no cgroup v2)."""


def _cgroup2_mount() -> Path | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[2] == "cgroup2":
                return Path(fields[1])
    return None


def _nft(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["nft", *args], input=stdin, capture_output=True, text=True, timeout=20, check=False
    )


class BusCuts:
    """Per node a cgroup; one nft table (``inet tandem_chaos_<pid>``) for this run's rules."""

    def __init__(self, nats_ports: list[int]) -> None:
        self.ports = sorted(nats_ports)
        self.table = f"tandem_chaos_{os.getpid()}"
        self.groups: dict[str, Path] = {}
        self.rules: dict[str, int] = {}  # node -> the rule's nft handle
        self.why_not = ""
        mount = _cgroup2_mount()
        if os.geteuid() != 0:
            self.why_not = "not root: no cgroup or nft rule of its own"
        elif shutil.which("nft") is None:
            self.why_not = "no nft on this machine"
        elif mount is None or not (mount / "cgroup.procs").exists():
            self.why_not = "no cgroup v2 hierarchy mounted"
        self.mount = mount

    def make_group(self, node: str) -> None:
        if self.why_not or self.mount is None:
            return
        group = self.mount / f"{PREFIX}{os.getpid()}-{node}"
        try:
            group.mkdir(exist_ok=True)
        except OSError as exc:
            self.why_not = f"no cgroup v2 of its own for {node}: {exc}"
            return
        self.groups[node] = group

    def join_argv(self, node: str, argv: list[str]) -> list[str]:
        """``argv`` started in ``node``'s cgroup (a shell joins it and ``exec``s: same pid)."""
        group = self.groups.get(node)
        if group is None:
            return argv
        procs = shlex.quote(str(group / "cgroup.procs"))
        script = (
            f'echo $$ > {procs} || echo "tandem-chaos: not in the cgroup {procs}" >&2; exec "$@"'
        )
        return ["sh", "-c", script, "sh", *argv]

    def pids(self, node: str) -> list[int]:
        group = self.groups.get(node)
        try:
            return [int(p) for p in (group / "cgroup.procs").read_text().split()] if group else []
        except OSError:
            return []

    def cut(self, node: str) -> dict[str, object]:
        """Drop what ``node``'s processes send to the bus; what the fault records."""
        if self.why_not:
            raise CutUnavailable(self.why_not)
        group = self.groups.get(node)
        if group is None:
            raise CutUnavailable(f"{node} has no cgroup of its own")
        assert self.mount is not None
        path = group.relative_to(CGROUP_ROOT).as_posix()
        level = len(group.relative_to(self.mount).parts)
        ports = ", ".join(str(p) for p in self.ports)
        script = (
            f"table inet {self.table} {{\n"
            "  chain out { type filter hook output priority 0; policy accept; }\n"
            "}\n"
        )
        done = _nft("-f", "-", stdin=script)
        if done.returncode != 0:
            raise CutUnavailable(f"nft table {self.table}: {done.stderr.strip()}")
        rule = f'socket cgroupv2 level {level} "{path}" tcp dport {{ {ports} }} drop'
        done = _nft("--echo", "--handle", "add", "rule", "inet", self.table, "out", *rule.split())
        found = re.search(r"# handle (\d+)", done.stdout)
        if done.returncode != 0 or found is None:
            raise CutUnavailable(f"nft rule for {node}: {done.stderr.strip() or done.stdout}")
        self.rules[node] = int(found.group(1))
        log.info("%s cut from the bus (nft: %s)", node, rule)
        return {"rule": rule, "pids_in_cgroup": self.pids(node)}

    def heal(self, node: str) -> None:
        handle = self.rules.pop(node, None)
        if handle is None:
            return
        done = _nft("delete", "rule", "inet", self.table, "out", "handle", str(handle))
        if done.returncode != 0:
            log.warning("nft: the cut of %s not deleted: %s", node, done.stderr.strip())
        else:
            log.info("%s back on the bus", node)

    def close(self) -> None:
        self.rules.clear()
        if not self.why_not:
            _nft("delete", "table", "inet", self.table)
        for group in self.groups.values():
            _remove_group(group)
        self.groups.clear()


def _remove_group(group: Path) -> None:
    for _ in range(50):
        try:
            left = (group / "cgroup.procs").read_text().split()
        except FileNotFoundError:
            return
        except OSError:
            left = []
        for pid in left:
            with contextlib.suppress(OSError):
                (group.parent / "cgroup.procs").write_text(f"{pid}\n")
        try:
            group.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            continue
    log.warning("cgroup %s could not be removed", group)


def sweep() -> list[str]:
    """Tables and cgroups of runs whose owner process is gone (SIGKILLed before ``close``)."""
    swept: list[str] = []
    if os.geteuid() != 0:
        return swept
    mount = _cgroup2_mount()
    if mount is not None:
        for group in mount.glob(f"{PREFIX}*"):
            owner = group.name[len(PREFIX) :].split("-", 1)[0]
            if owner.isdigit() and int(owner) != os.getpid() and not psutil.pid_exists(int(owner)):
                _remove_group(group)
                swept.append(str(group))
    if shutil.which("nft") is not None:
        listed = _nft("list", "tables")
        for name in re.findall(r"table inet (tandem_chaos_(\d+))", listed.stdout):
            table, owner = name
            if int(owner) != os.getpid() and not psutil.pid_exists(int(owner)):
                _nft("delete", "table", "inet", table)
                swept.append(f"nft table {table}")
    return swept
