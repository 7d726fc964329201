"""The chaos suite's topology, every part real: a 3-node NATS JetStream cluster with R3 streams
(``TANDEM_STREAMS_REPLICAS=3``), two orchestrators (``python -m tandem.orchestrator``, one
leads by lease) and a pair of node agents (``python -m tandem.agent``) protecting the demo app
(``tandem.agent.demoapp``) behind the loopback public port. Agents and orchestrators are given
all three NATS URLs. ``supervise`` restarts whatever is down and not held down by the nemesis,
as systemd would, and records an exit the nemesis did not cause as a crash.

Each node's protected folder lives on a small filesystem of its own and its agent (with its
app) runs in a blkio cgroup of its own (``chaos_disks``: a loop-mounted ext4 image), so that
the nemesis can fill that disk (``fill_disk``) or slow it down (``slow_disk``) without
touching the machine's disk or the other node; it also runs in a cgroup v2 of its own, so
the nemesis can cut it from the bus (``partition``: ``chaos_bus_cut``). ``close`` unmounts
the disks and removes the cgroups; what a run SIGKILLed before its ``close`` left is swept
by the next topology.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from chaos_bus_cut import BusCuts
from chaos_bus_cut import sweep as sweep_cuts
from chaos_disks import DISK_LEAVE, DISK_MIB, NodeDisks
from chaos_disks import sweep as sweep_disks
from chaos_procs import Exit, Proc

from pair_state import http_status, kill_leftovers, pair_ready
from tandem.cli.demo import loopback_public_toml, pair_node_toml
from tandem.events.bus import Bus
from tandem.events.bus_identities import ADMIN
from tandem.events.bus_tls import DEFAULT_SERVER_NAMES
from tandem.events.embedded import NatsCluster, NatsServer, free_port
from tandem.events.secure_bus import SecureBusFiles
from tandem.events.settings import BusSettings, load_stream_settings

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
        sweep_cuts()
        self.root = (root or Path(tempfile.mkdtemp(prefix="tandem-chaos-"))).resolve()
        self.keep, self.host = keep, host
        self.disk_mib = disk_mib
        #: Each node's data filesystem and blkio cgroup.
        self.disks = NodeDisks(self.root, disk_mib, keep)
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
        """A process's environment: every one logs in as the admin (least privilege per
        component is tested in tests/system/test_secured_switchover.py)."""
        login = self.secrets.login_env(ADMIN)
        login.pop("TANDEM_BUS_INBOX_PREFIX")
        return {
            **os.environ,
            **login,
            "TANDEM_LOG_LEVEL": "INFO",
            "TANDEM_STREAMS_REPLICAS": "3",
            "TANDEM_BUS_SERVERS": ",".join(self.urls),
            **extra,
        }

    def bus_settings(self, **bus: Any) -> BusSettings:
        """An in-process client's settings: the admin, as the processes log in."""
        return self.secrets.settings(ADMIN, servers=self.urls, inbox_prefix=None, **bus)

    def start_nats(self) -> None:
        names = dict.fromkeys([*DEFAULT_SERVER_NAMES, self.host])
        self.secrets = SecureBusFiles.create(
            self.root / "secrets", {}, server_names=list(names), rounds=4
        )
        cluster = NatsCluster(
            base_dir=self.root / "nats",
            size=3,
            name="chaos",
            host=self.host,
            extra_config=self.secrets.server_config(),
        )
        cluster.start()
        self.nats = [NatsNode(s) for s in cluster.servers]
        asyncio.run(self._provision())

    async def _provision(self) -> None:
        bus = await Bus.connect(self.bus_settings(request_timeout_s=3))
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
        return self.disks.disk_dir(node)

    def data_dir(self, node: str) -> Path:
        """``node``'s protected folder (the replicator's protected_root, the app's data)."""
        return self.disks.data_dir(node)

    def mount_disk(self, node: str) -> str:
        """``node``'s data filesystem and cgroup (``NodeDisks.mount``): what the disk is."""
        return self.disks.mount(node)

    def disk_free(self, node: str) -> int:
        return self.disks.free(node)

    def fill_disk(self, node: str, leave: int = DISK_LEAVE) -> dict[str, Any]:
        """Fill ``node``'s disk but for ``leave`` bytes (``DiskUnavailable``: not its own)."""
        return self.disks.fill(node, leave)

    def free_disk(self, node: str) -> int:
        """Delete the ballast; the bytes free after."""
        return self.disks.free_ballast(node)

    def slow_disk(self, node: str, **limits: int) -> dict[str, Any]:
        """Throttle ``node``'s disk for its processes (``NodeDisks.slow``)."""
        return self.disks.slow(node, **limits)

    def unslow_disk(self, node: str) -> dict[str, Any]:
        return self.disks.unslow(node)

    def partition(self, node: str) -> dict[str, Any]:
        """Cut ``node`` (its agent and app) from every NATS server (``chaos_bus_cut``)."""
        return self.cuts.cut(node)

    def heal(self, node: str) -> None:
        self.cuts.heal(node)

    def unmount_disks(self) -> None:
        """Unmount every data filesystem and remove the cgroups (``NodeDisks.close``)."""
        self.disks.close()

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
        self.cuts = BusCuts([int(url.rsplit(":", 1)[1]) for url in self.urls])
        for node in NODES:
            self.mount_disk(node)
            self.app_ports[node] = free_port()
            config = self.root / node / "node.toml"
            config.write_text(
                "# Written by the chaos suite (tests/chaos).\n" + self.node_config(node)
            )
            self.cuts.make_group(node)
            argv = self.disks.join_argv(node, self.agent_argv(node, config))
            argv = self.cuts.join_argv(node, argv)
            self.agents[node] = Proc(
                f"agent-{node}", argv, self.env(), self.root / node / "agent.log"
            )

    def add_orchestrators(self, count: int = 2) -> None:
        for i in range(count):
            port = free_port()
            env = self.env(
                TANDEM_ORCHESTRATOR_INSTANCE=f"orch-{i + 1}",
                TANDEM_ORCHESTRATOR_STATE_DIR=str(self.root / f"orch-{i + 1}-state"),
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
        if hasattr(self, "cuts"):
            self.cuts.close()
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
