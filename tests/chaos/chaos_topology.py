"""The chaos suite's topology, every part real: a 3-node NATS JetStream cluster with R3 streams
(``TANDEM_STREAMS_REPLICAS=3``), two orchestrators (``python -m tandem.orchestrator``, one
leads by lease) and a pair of node agents (``python -m tandem.agent``) protecting the demo app
(``tandem.agent.demoapp``) behind the loopback public port. Agents and orchestrators are given
all three NATS URLs. ``supervise`` restarts whatever is down and not held down by the nemesis,
as systemd would, and records an exit the nemesis did not cause as a crash.

Each node's protected folder lives on a small filesystem of its own (a tmpfs of ``disk_mib``
MiB mounted at ``<node>/disk``, the folder at ``<node>/disk/data``), so that the nemesis can
fill it with a ballast file beside the folder (``fill_disk``) without touching the machine's
disk. ``close`` unmounts them (lazily if busy); a run that never reached ``close`` (SIGKILLed)
has its mounts swept by the next topology (``sweep_disks``: the owner's pid is gone).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from chaos_procs import Exit, Proc

from pair_state import http_status, kill_leftovers, pair_ready
from tandem.cli.demo import loopback_public_toml, pair_node_toml
from tandem.events.bus import Bus
from tandem.events.embedded import NatsCluster, NatsServer, free_port
from tandem.events.settings import load_bus_settings, load_stream_settings

log = logging.getLogger(__name__)

CLUSTER = "chaos"
NODES = ("primary", "secondary")
APP, CHECK = "web", "web-http"
OPERATOR = "operator-token-for-the-chaos-suite-0123456789"
# Faster than the defaults, as the system tests run them (tests/agent_rig.py).
TIMING = """
[heartbeat]
interval_s = 0.1

[lease]
ttl_s = 3
renew_every_s = 0.3
fence_margin_s = 1.5
"""
#: The size of each node's data filesystem by default: the workload writes 10-20 records/s,
#: one 4 KiB tmpfs page each (<= 80 KiB/s: < 1 MiB in a 12 s scenario, ~5 MiB in the longest
#: a test runs); a test runs a few scenarios.
DISK_MIB = 64
#: What ``fill_disk`` leaves free: a couple of records fit, the next write gets ENOSPC.
DISK_LEAVE = 8 * 1024
BALLAST = "ballast"
_OWNER = ".tandem-chaos-owner"


def disk_mib_for(scenarios: int) -> int:
    """A data filesystem that holds ``scenarios`` scenarios' records comfortably (a run keeps
    one topology: the records add up; < 1 MiB a scenario, twice that and more to be safe)."""
    return max(DISK_MIB, 32 + 2 * scenarios)


def with_servers(toml: str, urls: list[str]) -> str:
    """A node config whose ``[bus] servers`` line names every NATS server."""
    lines = [
        f"servers = {json.dumps(urls)}" if ln.startswith("servers = ") else ln
        for ln in toml.splitlines()
    ]
    return "\n".join(lines) + "\n"


@dataclass
class NatsNode:
    """One nats-server of the cluster, supervised like the other processes."""

    server: NatsServer
    exits: list[Exit] = field(default_factory=list)
    expect_exit: bool = False
    held: bool = False

    @property
    def name(self) -> str:
        return self.server.name

    @property
    def pid(self) -> int | None:
        return self.server.process.pid if self.server.process is not None else None

    def running(self) -> bool:
        return self.server.is_running()

    def kill(self) -> None:
        pid = self.pid
        self.expect_exit = True
        if pid is not None:
            os.kill(pid, signal.SIGCONT)
        self.server.kill()
        self.exits.append(Exit(self.name, pid or 0, -9, time.time(), True, 0))

    def pause(self) -> None:
        if self.pid is not None:
            os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        if self.pid is not None:
            os.kill(self.pid, signal.SIGCONT)

    def reap(self) -> Exit | None:
        proc = self.server.process
        if proc is None or proc.poll() is None:
            return None
        ended = Exit(self.name, proc.pid, proc.returncode, time.time(), self.expect_exit, 0)
        self.exits.append(ended)
        self.server.process = None
        return ended

    def start(self) -> None:
        self.server.launch()
        self.server.wait_ready(30)
        self.expect_exit = False


class Topology:
    """Build with ``start()``; end with ``close()``. ``root`` holds every config and log."""

    def __init__(
        self,
        root: Path | None = None,
        keep: bool = False,
        host: str = "127.0.0.1",
        disk_mib: int = DISK_MIB,
    ):
        sweep_disks()
        self.root = (root or Path(tempfile.mkdtemp(prefix="tandem-chaos-"))).resolve()
        self.keep, self.host = keep, host
        self.disk_mib = disk_mib
        #: node -> its data filesystem's mount point (only those actually mounted).
        self.disks: dict[str, Path] = {}
        self.nats: list[NatsNode] = []
        self.orchestrators: list[Proc] = []
        self.agents: dict[str, Proc] = {}
        self.app_ports: dict[str, int] = {}
        self.api_ports: list[int] = []
        self.public_port = free_port()
        #: Where clients reach the public identity (a LAN address in the netns topology).
        self.public_host = "127.0.0.1"
        self.crashes: list[Exit] = []

    # -- building ------------------------------------------------------------------------------

    @property
    def urls(self) -> list[str]:
        return [f"nats://{self.host}:{n.server.port}" for n in self.nats]

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "TANDEM_LOG_LEVEL": "INFO",
            "TANDEM_STREAMS_REPLICAS": "3",
            "TANDEM_BUS_SERVERS": ",".join(self.urls),
            **extra,
        }

    def start_nats(self) -> None:
        cluster = NatsCluster(base_dir=self.root / "nats", size=3, name="chaos")
        if self.host != "127.0.0.1":
            _start_on_host(cluster, self.host)
        else:
            cluster.start()
        for server in cluster.servers:
            server.port = server.client_port or -1  # a restart listens where clients look
        self.nats = [NatsNode(s) for s in cluster.servers]
        asyncio.run(self._provision())

    async def _provision(self) -> None:
        bus = await Bus.connect(load_bus_settings(servers=self.urls, request_timeout_s=3))
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    await bus.provision(load_stream_settings(replicas=3))
                    return
                except Exception as exc:  # the cluster is still electing its meta leader
                    if time.monotonic() > deadline:
                        raise
                    log.info("provisioning R3 streams: %r; again", exc)
                    await asyncio.sleep(0.5)
        finally:
            await bus.close()

    def disk_dir(self, node: str) -> Path:
        """Where ``node``'s data filesystem is mounted."""
        return self.root / node / "disk"

    def data_dir(self, node: str) -> Path:
        """``node``'s protected folder (the replicator's protected_root, the app's data)."""
        return self.disk_dir(node) / "data"

    def mount_disk(self, node: str) -> None:
        """A tmpfs of ``disk_mib`` MiB at ``disk_dir(node)``, with the data folder in it (a
        plain folder, and no ``fill-disk``, where mounting is refused: not root)."""
        disk = self.disk_dir(node)
        disk.mkdir(parents=True, exist_ok=True)
        if node not in self.disks:
            done = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={self.disk_mib}m,mode=0755", "tmpfs", disk],
                capture_output=True,
                text=True,
                timeout=10,
            )
            if done.returncode != 0:
                why = done.stderr.strip()
                log.warning("no filesystem of its own for %s (%s): a plain folder", node, why)
            else:
                if not self.disks:
                    atexit.register(self.unmount_disks)  # close() not reached: still unmounted
                self.disks[node] = disk
                (disk / _OWNER).write_text(f"{os.getpid()}\n")
        self.data_dir(node).mkdir(parents=True, exist_ok=True)

    def disk_free(self, node: str) -> int:
        st = os.statvfs(self.disk_dir(node))
        return st.f_bavail * st.f_frsize

    def fill_disk(self, node: str, leave: int = DISK_LEAVE) -> dict[str, Any]:
        """Write a ballast file beside ``node``'s protected folder (same filesystem, outside
        the folder) until about ``leave`` bytes are left free; what was done, for the fault."""
        disk = self.disks.get(node)
        if disk is None or not os.path.ismount(disk):
            raise RuntimeError(f"{node}'s data folder is not on a filesystem of its own")
        ballast = disk / BALLAST
        st = os.statvfs(disk)
        before = self.disk_free(node)
        chunk = b"\0" * (1 << 20)
        fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            while (want := self.disk_free(node) - leave) > 0:
                try:
                    os.write(fd, chunk[: min(want, len(chunk))])
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break  # the workload took the last pages meanwhile
            if self.disk_free(node) < leave:  # full to the last page: give ``leave`` back
                os.ftruncate(fd, max(0, os.fstat(fd).st_size - leave))
            size = os.fstat(fd).st_size
        finally:
            os.close(fd)
        after = self.disk_free(node)
        log.info("%s's disk filled: %d bytes of ballast, %d bytes free", node, size, after)
        return {
            "node": node,
            "ballast": str(ballast),
            "disk_bytes": st.f_blocks * st.f_frsize,
            "free_before": before,
            "ballast_bytes": size,
            "free_after": after,
        }

    def free_disk(self, node: str) -> int:
        """Delete the ballast; the bytes free after."""
        disk = self.disks.get(node)
        if disk is not None:
            (disk / BALLAST).unlink(missing_ok=True)
            return self.disk_free(node)
        return 0

    def unmount_disks(self) -> None:
        """Unmount every data filesystem (lazily when busy); a kept run keeps a copy of each
        protected folder at ``<node>/data-kept``."""
        for node, disk in list(self.disks.items()):
            if self.keep and self.data_dir(node).is_dir():
                with contextlib.suppress(OSError):
                    shutil.copytree(self.data_dir(node), self.root / node / "data-kept")
            unmount(disk)
            del self.disks[node]

    def node_config(self, node: str) -> str:
        base = self.root / node
        core = pair_node_toml(
            cluster=CLUSTER,
            node=node,
            nodes=NODES,
            base=base,
            data=self.data_dir(node),
            bus_url=self.urls[0],
            app=APP,
            app_port=self.app_ports[node],
            check=CHECK,
            check_interval_s=0.2,
            check_timeout_s=1,
        )
        text = with_servers(core, self.urls) + TIMING
        return text + loopback_public_toml(self.app_ports[node], self.public_port)

    def agent_argv(self, node: str, config: Path) -> list[str]:
        return [sys.executable, "-m", "tandem.agent", "--config", str(config)]

    def add_agents(self) -> None:
        for node in NODES:
            self.mount_disk(node)
            self.app_ports[node] = free_port()
            config = self.root / node / "node.toml"
            config.write_text(
                "# Written by the chaos suite (tests/chaos).\n" + self.node_config(node)
            )
            argv = self.agent_argv(node, config)
            self.agents[node] = Proc(
                f"agent-{node}", argv, self.env(), self.root / node / "agent.log"
            )

    def add_orchestrators(self, count: int = 2) -> None:
        for i in range(count):
            port = free_port()
            env = self.env(
                TANDEM_ORCHESTRATOR_INSTANCE=f"orch-{i + 1}",
                TANDEM_ORCHESTRATOR_API_PORT=str(port),
                TANDEM_ORCHESTRATOR_TOKENS=f"operator {OPERATOR}",
            )
            argv = [sys.executable, "-m", "tandem.orchestrator"]
            self.orchestrators.append(
                Proc(f"orch-{i + 1}", argv, env, self.root / f"orch-{i + 1}.log")
            )
            self.api_ports.append(port)

    def start(self, ready_timeout: float = 120) -> Topology:
        self.start_nats()
        self.add_agents()
        self.add_orchestrators()
        for proc in self.procs():
            proc.start()
        ok, why = self.wait_ready(ready_timeout, settle=1.0)
        if not ok:
            raise RuntimeError(f"the chaos topology did not get ready: {why}")
        return self

    def procs(self) -> list[Proc]:
        return [*self.agents.values(), *self.orchestrators]

    # -- supervision ---------------------------------------------------------------------------

    def supervise(self) -> list[Exit]:
        """Reap what ended and restart what is down and not held; returns the crashes found."""
        found = []
        for proc in self.procs():
            ended = proc.reap()
            if ended is not None and not ended.expected:
                found.append(ended)
            if not proc.running() and not proc.held:
                proc.start()
        for nats_node in self.nats:
            ended = nats_node.reap()
            if ended is not None and not ended.expected:
                found.append(ended)
            if not nats_node.running() and not nats_node.held:
                nats_node.start()
        self.crashes += found
        return found

    def logs(self) -> dict[str, Path]:
        out = {p.name: p.log for p in self.procs()}
        for node in NODES:
            out[f"app-{node}"] = self.root / node / f"{APP}.log"
        for n in self.nats:
            out[n.name] = n.server.log_path
        return out

    def close(self) -> list[str]:
        """Stop everything (agents first: they stop their apps); remove the folder unless
        kept. Returns what had to be killed the hard way."""
        for proc in self.procs():
            proc.held = True
            proc.stop()
        self.crashes += [
            e
            for p in self.procs()
            for e in p.exits[-1:]
            if not e.expected and e not in self.crashes
        ]
        keep = {n.pid for n in self.nats if n.pid is not None}
        forced = kill_leftovers(self.root, keep)
        for n in self.nats:
            n.held = True
            n.resume()
            n.server.stop()
        self.unmount_disks()
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)
        return forced

    # -- the orchestrators' API ----------------------------------------------------------------

    def api(self, index: int) -> httpx.Client:
        return httpx.Client(
            base_url=f"http://127.0.0.1:{self.api_ports[index]}",
            headers={"Authorization": f"Bearer {OPERATOR}"},
            timeout=5,
        )

    def _get(self, index: int, path: str) -> Any:
        try:
            with self.api(index) as api:
                answer = api.get(path)
            return answer.json() if answer.status_code == 200 else None
        except (httpx.HTTPError, ValueError):
            return None

    def leader(self) -> int | None:
        """The index of the orchestrator that says it leads (the first, if two do)."""
        for i, proc in enumerate(self.orchestrators):
            health = self._get(i, "/healthz") if proc.running() else None
            if health and health.get("leader"):
                return i
        return None

    def view(self, index: int | None = None) -> dict[str, Any] | None:
        index = self.leader() if index is None else index
        return None if index is None else self._get(index, f"/api/v1/clusters/{CLUSTER}")

    def saga(self, saga_id: str) -> dict[str, Any] | None:
        for i in range(len(self.orchestrators)):
            found = self._get(i, f"/api/v1/sagas/{saga_id}")
            if found is not None:
                return found  # type: ignore[no-any-return]
        return None

    def switchover(self, reason: str) -> tuple[int, dict[str, Any]]:
        """POST a managed switchover to the leading orchestrator: (status, body)."""
        index = self.leader()
        if index is None:
            return 0, {"error": "no orchestrator leads"}
        try:
            with self.api(index) as api:
                answer = api.post(f"/api/v1/clusters/{CLUSTER}/switchover", json={"reason": reason})
            return answer.status_code, answer.json()
        except (httpx.HTTPError, ValueError) as exc:
            return 0, {"error": repr(exc)}

    def ready(self) -> tuple[bool, str]:
        """One leader; the Active serves (role active, check ok, public port 200); the other
        node alive, passive and not out of sync; no saga running."""
        if self.leader() is None:
            return False, "no orchestrator leads"
        ready, why = pair_ready(self.view(), CHECK)
        if not ready:
            return False, why
        if http_status(self.public_port, timeout=1, host=self.public_host) != 200:
            return False, "the public port does not answer 200"
        return True, ""

    def wait_ready(
        self, timeout: float, settle: float = 0.0, tick: Callable[[], object] | None = None
    ) -> tuple[bool, str]:
        """Wait until ``ready`` has held ``settle`` s in a row; ``tick`` runs every round (the
        supervisor)."""
        deadline = time.monotonic() + timeout
        since: float | None = None
        why = ""
        while True:
            if tick is not None:
                tick()
            ok, why = self.ready()
            now = time.monotonic()
            since = (since or now) if ok else None
            if since is not None and now - since >= settle:
                return True, ""
            if now >= deadline:
                return False, why
            time.sleep(0.2)


def unmount(path: Path) -> None:
    """``umount``, or ``umount -l`` when the filesystem is busy (a process still in it)."""
    done = subprocess.run(["umount", str(path)], capture_output=True, text=True, timeout=20)
    if done.returncode != 0 and os.path.ismount(path):
        log.warning("umount %s: %s; lazily", path, done.stderr.strip())
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=20)


def sweep_disks() -> list[str]:
    """Unmount the data filesystems of chaos topologies whose owner process is gone (a run
    SIGKILLed before its ``close``). Only ours: tmpfs mounts at ``tandem-chaos-*/<node>/disk``
    holding an owner file."""
    swept = []
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return swept
    for line in mounts:
        fields = line.split()
        if len(fields) < 3 or fields[2] != "tmpfs":
            continue
        point = Path(fields[1].replace("\\040", " "))
        if point.name != "disk" or not point.parent.parent.name.startswith("tandem-chaos-"):
            continue
        try:
            owner = int((point / _OWNER).read_text().strip())
        except (OSError, ValueError):
            continue
        if owner == os.getpid() or psutil.pid_exists(owner):
            continue
        log.warning("a chaos run's data filesystem left mounted (owner %d gone): %s", owner, point)
        unmount(point)
        swept.append(str(point))
    return swept


def _start_on_host(cluster: NatsCluster, host: str) -> None:
    """``NatsCluster.start`` with every server listening on ``host`` (a root-namespace leg the
    network-namespace hosts reach)."""
    ports = [free_port(host) for _ in range(cluster.size)]
    routes = [f"nats-route://{host}:{p}" for p in ports]
    cluster.servers = [
        NatsServer(
            store_dir=cluster.base_dir / f"n{i + 1}",
            name=f"{cluster.name}-n{i + 1}",
            host=host,
            cluster_name=cluster.name,
            cluster_port=port,
            routes=[r for j, r in enumerate(routes) if j != i],
            monitor_port=None,
        )
        for i, port in enumerate(ports)
    ]
    for server in cluster.servers:
        server.launch()
    for server in cluster.servers:
        server.wait_ready(30)
