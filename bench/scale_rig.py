"""What the scale benchmark (bench/scale.py) runs against, and how it looks at it.

One nats-server with logins and TLS and JetStream's ``sync_interval: always`` (the
``NatsServer`` default: every stored write fsynced before it is acknowledged), N clusters
seeded as their first pairing leaves them (per cluster ``NodeRoleAssumed`` x 2 and
``RoleChanged`` in the events stream, east Active at epoch 1, and the same in
``tandem_roles``), and one real orchestrator (``python -m tandem.orchestrator``) with
Tandem's default timings: only its API port and tokens are set.

Everything the benchmark reads is outside the orchestrator's code: its REST API, the events
stream (``EventWatch``: a core subscription to ``tandem.evt.>``), /proc and its log.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from console_rig import seed_events
from secured_bus import start_secured_server
from tandem.events.bus import Bus
from tandem.events.embedded import NatsServer, free_port, nats_server_binary
from tandem.events.roles import RoleRecord
from tandem.events.settings import load_bus_settings, load_stream_settings
from tandem.events.subjects import ROLES_BUCKET, role_key

log = logging.getLogger(__name__)

OPERATOR = "operator-token-for-the-scale-bench-0123456789"
VIEWER = "viewer-token-for-the-scale-bench-0123456789"
TICKS = os.sysconf("SC_CLK_TCK")
#: What varies between lines saying the same (numbers, ids, cluster names): blanked to group.
_VARYING = re.compile(r"\b[0-9a-z_.:-]*\d[0-9a-z_.:-]*\b")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def machine_busy_s() -> float:
    """CPU seconds every core of this machine was busy so far (/proc/stat: all but idle and
    iowait), whoever used them."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / TICKS


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def log_findings(
    path: Path, marks: tuple[str, ...], until: str = "", limit: int = 12
) -> dict[str, Any]:
    """How many lines of a log hold one of ``marks`` (before ``until``, a ``YYYY-mm-dd
    HH:MM:SS`` prefix, when given), and the distinct ones (numbers and ids blanked out to
    group them), most frequent first, with a count and one example each."""
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return {"lines": 0, "distinct": []}
    hits = [line for line in lines if any(m in line for m in marks)]
    if until:
        hits = [line for line in hits if not (line[:2] == "20" and line[:19] >= until)]
    groups: Counter[str] = Counter()
    example: dict[str, str] = {}
    for line in hits:
        body = line[24:] if line[:2] == "20" else line  # without the timestamp
        gist = _VARYING.sub("#", body)[:200]
        groups[gist] += 1
        example.setdefault(gist, line[:400])
    return {
        "lines": len(hits),
        "distinct": [{"count": n, "example": example[g]} for g, n in groups.most_common(limit)],
    }


@dataclass
class ScaleRig:
    clusters: int
    #: The checkout whose orchestrator runs (its ``*/src`` folders first on PYTHONPATH);
    #: None: the installed one (this work tree).
    code: Path | None = None
    root: Path = field(init=False)
    nats: NatsServer | None = None
    api_port: int = 0
    orchestrator: subprocess.Popen[bytes] | None = None
    orchestrator_started: float = 0.0

    def __post_init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="tandem-bench-scale-")).resolve()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def bus_url(self) -> str:
        assert self.nats is not None
        return self.nats.url

    def start_bus(self) -> None:
        # Logins and TLS as deployed; this process (and so every child) logs in as the admin.
        self.nats = start_secured_server(self.root / "nats", name="bench-scale")
        if "sync_interval: always" not in self.nats.config_text():
            raise RuntimeError("the benchmark needs JetStream's sync_interval: always")

    def seed(self) -> float:
        started = time.monotonic()
        asyncio.run(self._seed())
        return time.monotonic() - started

    async def _seed(self) -> None:
        bus = await Bus.connect(load_bus_settings(servers=self.bus_url), name="bench-scale-seed")
        try:
            await bus.provision(load_stream_settings())
            events = seed_events(self.clusters)
            for start in range(0, len(events), 1000):
                await bus.publish_many(events[start : start + 1000])
            kv = await bus.kv(ROLES_BUCKET)
            names = [f"c{i:04d}" for i in range(self.clusters)]
            for start in range(0, len(names), 500):
                batch = names[start : start + 500]
                await asyncio.gather(*(kv.put(role_key(c), _record()) for c in batch))
        finally:
            await bus.close()

    def start_orchestrator(self) -> None:
        self.api_port = free_port()
        env = {
            **os.environ,
            "TANDEM_LOG_LEVEL": "WARNING",
            "TANDEM_BUS_SERVERS": self.bus_url,
            "TANDEM_ORCHESTRATOR_API_PORT": str(self.api_port),
            "TANDEM_ORCHESTRATOR_TOKENS": f"operator {OPERATOR};viewer {VIEWER}",
        }
        if self.code is not None:
            env["PYTHONPATH"] = os.pathsep.join(str(p) for p in source_dirs(self.code))
        with (self.root / "orchestrator.log").open("ab") as out:
            self.orchestrator = subprocess.Popen(
                [sys.executable, "-m", "tandem.orchestrator"],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        self.orchestrator_started = time.monotonic()

    def api(self) -> httpx.Client:
        headers = {"Authorization": f"Bearer {VIEWER}"}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def wait_leader(self, api: httpx.Client, timeout: float) -> float | None:
        """Seconds from the orchestrator's start until ``/healthz`` says it leads, or None."""
        deadline = self.orchestrator_started + timeout
        while time.monotonic() < deadline:
            try:
                if api.get("/healthz", timeout=5).json().get("leader") is True:
                    return time.monotonic() - self.orchestrator_started
            except (httpx.HTTPError, ValueError):
                pass
            self._check_alive()
            time.sleep(0.25)
        return None

    def wait_all_alive(self, api: httpx.Client, timeout: float) -> tuple[float | None, int]:
        """Seconds from the orchestrator's start until ``GET /clusters`` lists every cluster
        with both nodes alive (or None), and how many nodes were alive last."""
        deadline = self.orchestrator_started + timeout
        alive = 0
        while time.monotonic() < deadline:
            try:
                views = self._every_cluster(api)
                if views is not None:
                    alive = sum(1 for c in views for n in c["nodes"] if n["alive"])
                    if len(views) >= self.clusters and alive >= 2 * self.clusters:
                        return time.monotonic() - self.orchestrator_started, alive
            except (httpx.HTTPError, ValueError):
                pass
            self._check_alive()
            time.sleep(1.0)
        return None, alive

    @staticmethod
    def _every_cluster(api: httpx.Client) -> list[dict[str, Any]] | None:
        """Every cluster's view, a page of 1,000 at a time (None: an answer was not 200)."""
        views: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 1000}
        while True:
            answer = api.get("/api/v1/clusters", params=params)
            if answer.status_code != 200:
                return None
            page = answer.json()
            views += page
            if "next" not in answer.links or not page:
                return views
            params = {"limit": 1000, "after": page[-1]["name"]}

    def _check_alive(self) -> None:
        if self.orchestrator is not None and self.orchestrator.poll() is not None:
            raise RuntimeError(
                f"the orchestrator exited with {self.orchestrator.returncode}: "
                + " | ".join(self.orchestrator_log_tail())
            )

    def orchestrator_log_tail(self, lines: int = 15) -> list[str]:
        try:
            text = (self.root / "orchestrator.log").read_text(errors="replace")
        except OSError:
            return []
        return text.splitlines()[-lines:]

    def findings(self, until: str = "") -> dict[str, Any]:
        """WARNING and worse in the orchestrator's log before ``until`` (its stop says its
        own), and nats-server's warnings."""
        assert self.nats is not None
        marks = (" WARNING ", " ERROR ", " CRITICAL ", "Traceback")
        return {
            "orchestrator_log": log_findings(self.root / "orchestrator.log", marks, until),
            "nats_log": log_findings(self.nats.log_path, ("[WRN]", "[ERR]", "[FTL]")),
        }

    def stop_orchestrator(self) -> None:
        if self.orchestrator is not None and self.orchestrator.poll() is None:
            self.orchestrator.terminate()
            try:
                self.orchestrator.wait(15)
            except subprocess.TimeoutExpired:
                self.orchestrator.kill()
                self.orchestrator.wait(5)

    def close(self) -> None:
        self.stop_orchestrator()
        if self.nats is not None:
            self.nats.stop()

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def source_dirs(code: Path) -> list[Path]:
    """The packages' source folders of a checkout (``libs/*/src``, ``services/*/src``...)."""
    return sorted(p for p in code.glob("*/*/src") if (p / "tandem").is_dir()) + sorted(
        p for p in code.glob("*/src") if (p / "tandem").is_dir()
    )


def code_commit(code: Path | None) -> dict[str, Any]:
    """Which code the orchestrator ran: the checkout, its commit, whether it had changes."""
    where = code or Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(where), *args], capture_output=True, text=True)
        return done.stdout.strip()

    return {
        "checkout": str(where),
        "commit": git("rev-parse", "HEAD"),
        "changed_files": len(git("status", "--porcelain", "--untracked-files=no").splitlines()),
    }


def machine() -> dict[str, Any]:
    try:
        nats = subprocess.run([nats_server_binary(), "--version"], capture_output=True, text=True)
        version = nats.stdout.strip()
    except (OSError, RuntimeError):
        version = "unknown"
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "nats_server": version,
    }


def _record() -> bytes:
    return RoleRecord(active="east", epoch=1, reason="seeded").model_dump_json().encode()


class EventWatch:
    """Every event stored in the stream as this process receives it (core NATS subscription
    to ``tandem.evt.>`` in a thread of its own): counts per type, and the arrival time
    (wall clock) with the payload of the ones a failover is about."""

    KEPT = ("SagaStarted", "FailoverRecommended", "AlertRaised")

    def __init__(self, bus_url: str) -> None:
        self.bus_url = bus_url
        self.counts: Counter[str] = Counter()
        self.kept: list[tuple[float, str, str, dict[str, Any]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-watch", daemon=True)

    def start(self) -> EventWatch:
        self._thread.start()
        if not self._ready.wait(20):
            raise RuntimeError("the event watch did not subscribe in 20 s")
        return self

    def _run(self) -> None:
        asyncio.run(self._watch())

    async def _watch(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        settings = load_bus_settings(servers=self.bus_url)
        bus = await Bus.connect(settings, name="bench-scale-events")

        async def on_event(msg: Any) -> None:
            at = time.time()
            kind = msg.subject.rsplit(".", 1)[-1]
            self.counts[kind] += 1
            if kind in self.KEPT:
                event = json.loads(msg.data)
                self.kept.append((at, kind, event.get("cluster", ""), event.get("payload", {})))

        await bus.nc.subscribe("tandem.evt.>", cb=on_event)
        await bus.nc.flush()
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await bus.close()

    def first(self, kind: str, cluster: str, after: float) -> tuple[float, dict[str, Any]] | None:
        for at, k, c, payload in list(self.kept):
            if k == kind and c == cluster and at >= after:
                return at, payload
        return None

    def clusters_with(self, kind: str) -> set[str]:
        return {c for _, k, c, _ in list(self.kept) if k == kind}

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
