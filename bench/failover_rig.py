"""The processes of the failover benchmark (bench/failover.py): one embedded nats-server, a pair
of node agents (``python -m tandem.agent``) protecting the demo application on loopback, one
orchestrator (``python -m tandem.orchestrator``) and its REST API; plus the small HTTP probes
the benchmark times with.

Node configs set no ``[heartbeat]``, ``[lease]`` or ``[failover]`` table: the defaults are
what is measured. Every process started here is recorded and ended by ``Rig.close`` (also the
demo apps, which the agents start in sessions of their own: found by pid file and by the
rig's folder on their command line).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from pair_state import http_status as probe_status
from pair_state import kill_leftovers, pair_ready
from secured_bus import start_secured_server
from tandem.cli.demo import loopback_public_toml, pair_node_toml
from tandem.events.bus import Bus
from tandem.events.embedded import NatsServer, free_port
from tandem.events.settings import load_bus_settings, load_stream_settings

CLUSTER = "bench"
NODES = ("primary", "secondary")
APP = "web"
CHECK = "web-http"
OPERATOR = "operator-token-for-the-failover-bench-0123456789"


def http_status(port: int, path: str = "/health", timeout: float = 0.25) -> int | None:
    """One GET on a fresh connection to 127.0.0.1:port; its status, or None (any failure)."""
    return probe_status(port, path, timeout)


def poll_until_ok(port: int, deadline: float, every: float = 0.02, timeout: float = 0.25) -> bool:
    """GET /health every ``every`` s (monotonic clock) until a 200 or the deadline."""
    while True:
        started = time.monotonic()
        if http_status(port, timeout=timeout) == 200:
            return True
        if started >= deadline:
            return False
        time.sleep(max(0.0, every - (time.monotonic() - started)))


def wait_until(check: Callable[[], bool], timeout: float, every: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(every)


def parse_time(text: str | None) -> float | None:
    """An API timestamp (ISO 8601, UTC) as a Unix time."""
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def log_tail(path: Path, lines: int = 30) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return []


def log_grep(
    path: Path, words: tuple[str, ...], since: str = "", until: str = "", limit: int = 40
) -> list[str]:
    """Lines of a log holding any of ``words`` (case-insensitive), from ``since`` to ``until``
    (wall-clock ``YYYY-mm-dd HH:MM:SS`` prefixes compared as text, ``until`` included)."""
    out = []
    for line in log_tail(path, 100_000):
        if since and line[:19] < since:
            continue
        if until and line[:2] == "20" and line[:19] > until:
            break  # a stamped line past the window (a traceback's lines are not stamped)
        low = line.lower()
        if any(w in low for w in words):
            out.append(line[:400])
    return out[-limit:]


def node_config(root: Path, node: str, bus_url: str, app_port: int, public_port: int) -> str:
    """One node of the pair: replication (watch) of its data folder, the demo app, an http check
    on it, the loopback public port. No heartbeat, lease or failover table: the defaults."""
    base = root / node
    core = pair_node_toml(
        cluster=CLUSTER,
        node=node,
        nodes=NODES,
        base=base,
        data=base / "data",
        bus_url=bus_url,
        app=APP,
        app_port=app_port,
        check=CHECK,
        check_interval_s=0.5,
        check_timeout_s=1,
    )
    return "# Written by bench/failover.py.\n" + core + loopback_public_toml(app_port, public_port)


@dataclass
class Node:
    name: str
    config: Path
    log: Path
    state_dir: Path
    app_port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def app_pid_file(self) -> Path:
        return self.state_dir / "apps" / f"{APP}.pid"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class Rig:
    """The pair and its orchestrator, in a temp folder removed by ``close`` (unless kept)."""

    keep: bool = False
    root: Path = field(init=False)
    nats: NatsServer | None = None
    public_port: int = 0
    api_port: int = 0
    nodes: dict[str, Node] = field(default_factory=dict)
    orchestrator: subprocess.Popen[bytes] | None = None
    others: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _api: httpx.Client | None = None

    def __post_init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="tandem-bench-failover-")).resolve()

    # -- processes ----------------------------------------------------------------------------

    def _env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, "TANDEM_LOG_LEVEL": "INFO", **extra}

    def spawn(self, argv: list[str], log: Path, **env: str) -> subprocess.Popen[bytes]:
        """A process of ours (ended by ``close``), output appended to ``log``."""
        with log.open("ab") as out:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        self.others.append(proc)
        return proc

    def start(self) -> Rig:
        self.nats = start_secured_server(self.root / "nats", name="bench-failover")
        asyncio.run(self._provision())
        self.public_port = free_port()
        for node in NODES:
            base = self.root / node
            (base / "data").mkdir(parents=True, exist_ok=True)
            app_port = free_port()
            config = base / "node.toml"
            config.write_text(
                node_config(self.root, node, self.nats.url, app_port, self.public_port)
            )
            self.nodes[node] = Node(node, config, base / "agent.log", base / "state", app_port)
        for node in NODES:
            self.start_agent(node)
        self.api_port = free_port()
        env = self._env(
            TANDEM_BUS_SERVERS=self.nats.url,
            TANDEM_ORCHESTRATOR_API_PORT=str(self.api_port),
            TANDEM_ORCHESTRATOR_TOKENS=f"operator {OPERATOR}",
        )
        self.orchestrator = self.spawn(
            [sys.executable, "-m", "tandem.orchestrator"], self.root / "orchestrator.log", **env
        )
        self._api = httpx.Client(
            base_url=f"http://127.0.0.1:{self.api_port}",
            headers={"Authorization": f"Bearer {OPERATOR}"},
            timeout=5,
        )
        return self

    async def _provision(self) -> None:
        assert self.nats is not None
        bus = await Bus.connect(load_bus_settings(servers=self.nats.url), name="bench-failover")
        try:
            await bus.provision(load_stream_settings())
        finally:
            await bus.close()

    def start_agent(self, node: str) -> None:
        n = self.nodes[node]
        n.proc = self.spawn(
            [sys.executable, "-m", "tandem.agent", "--config", str(n.config)], n.log, **self._env()
        )

    def kill_node(self, node: str, app: bool = True) -> dict[str, Any]:
        """SIGKILL the node's agent and (unless ``app`` is false) its demo app (pid file read
        first); what was killed."""
        n = self.nodes[node]
        app_pid = read_pid(n.app_pid_file)
        assert n.proc is not None
        n.proc.kill()
        killed_app = False
        if app and app_pid is not None and _is_ours(app_pid, self.root):
            with contextlib.suppress(ProcessLookupError):
                os.kill(app_pid, signal.SIGKILL)
                killed_app = True
        return {"agent_pid": n.proc.pid, "app_pid": app_pid, "app_killed": killed_app}

    def reap(self, node: str, timeout: float = 10) -> None:
        n = self.nodes[node]
        if n.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                n.proc.wait(timeout)

    def close(self) -> list[str]:
        """End everything started here (gently, then SIGKILL); remove the folder. Returns what
        had to be killed the hard way (for the report)."""
        forced: list[str] = []
        if self._api is not None:
            self._api.close()
        # Agents first: a SIGTERM makes them stop their applications.
        agents = [n.proc for n in self.nodes.values() if n.proc is not None]
        for proc in agents:
            if proc.poll() is None:
                proc.terminate()
        for proc in agents:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                forced.append(f"agent pid {proc.pid}")
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(5)
        for proc in self.others:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    forced.append(f"pid {proc.pid}")
                    proc.kill()
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(5)
        # Demo apps (own sessions) and anything else still naming our folder.
        for n in self.nodes.values():
            pid = read_pid(n.app_pid_file)
            if pid is not None and _is_ours(pid, self.root):
                forced.append(f"app pid {pid} of {n.name}")
                _kill_group(pid)
        forced += _kill_leftovers(self.root, exclude=self.nats)
        if self.nats is not None:
            self.nats.stop()
        if not self.keep:
            shutil.rmtree(self.root, ignore_errors=True)
        return forced

    # -- the orchestrator's API ---------------------------------------------------------------

    @property
    def api(self) -> httpx.Client:
        assert self._api is not None
        return self._api

    def leader(self) -> bool:
        try:
            answer = self.api.get("/healthz")
            return answer.status_code == 200 and bool(answer.json().get("leader"))
        except (httpx.HTTPError, ValueError):
            return False

    def view(self) -> dict[str, Any] | None:
        try:
            answer = self.api.get(f"/api/v1/clusters/{CLUSTER}")
        except httpx.HTTPError:
            return None
        if answer.status_code != 200:
            return None
        view: dict[str, Any] = answer.json()
        return view

    def saga(self, saga_id: str) -> dict[str, Any] | None:
        try:
            answer = self.api.get(f"/api/v1/sagas/{saga_id}")
        except httpx.HTTPError:
            return None
        if answer.status_code != 200:
            return None
        saga: dict[str, Any] = answer.json()
        return saga

    def switchover(self) -> httpx.Response:
        return self.api.post(f"/api/v1/clusters/{CLUSTER}/switchover", json={"reason": "bench"})

    def ready(self) -> tuple[bool, str]:
        """The pair is ready: the Active serves through the public port (role active, check
        ok) and the other node is alive, passive and not out of sync (the orchestrator's
        guard refuses a failover to an out-of-sync node). Returns (ready, why not)."""
        ready, why = pair_ready(self.view(), CHECK)
        if not ready:
            return False, why
        if http_status(self.public_port, timeout=1) != 200:
            return False, "public port does not answer 200"
        return True, ""

    def wait_ready(self, timeout: float, settle: float = 0.0) -> tuple[bool, str]:
        """Wait until ``ready`` has held for ``settle`` s in a row (a node that has just
        restarted looks alive and passive from its first heartbeat on)."""
        deadline = time.monotonic() + timeout
        since: float | None = None
        while True:
            ok, why = self.ready()
            now = time.monotonic()
            if not ok:
                since = None
            elif since is None:
                since = now
            if since is not None and now - since >= settle:
                return True, ""
            if now >= deadline:
                return False, why or f"ready for only {now - (since or now):.1f}s"
            time.sleep(0.1)

    def events_after(self, after: int, max_pages: int = 50) -> tuple[list[dict[str, Any]], int]:
        """The cluster's events with a stream sequence above ``after``; and the last sequence."""
        out: list[dict[str, Any]] = []
        last = after
        for _ in range(max_pages):
            try:
                answer = self.api.get(
                    "/api/v1/events",
                    params={"cluster": CLUSTER, "after": last, "limit": 1000},
                    timeout=30,
                )
            except httpx.HTTPError:
                break
            if answer.status_code != 200:
                break
            page = answer.json()
            if not page:
                break
            out += page
            last = page[-1]["seq"]
            if len(page) < 1000:
                break
        return out, last


def _is_ours(pid: int, root: Path) -> bool:
    """The process names our folder on its command line (a demo app or an agent of ours)."""
    try:
        return any(str(root) in part for part in psutil.Process(pid).cmdline())
    except (psutil.Error, OSError):
        return False


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def _kill_leftovers(root: Path, exclude: NatsServer | None) -> list[str]:
    keep = set()
    if exclude is not None and exclude.process is not None:
        keep.add(exclude.process.pid)  # stopped cleanly by its own stop()
    return [f"leftover {line}" for line in kill_leftovers(root, keep)]
