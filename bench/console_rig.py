"""What the console benchmark (bench/console.py) runs against: one nats-server, one real
orchestrator (``python -m tandem.orchestrator``) and a synthetic projection of N clusters.

The clusters exist only as events in the stream (two nodes each, one Active: their
``NodeRoleAssumed`` and ``RoleChanged``); no agent runs, so the orchestrator's failover
timeout is set far beyond the run (nothing fails over) and every node shows as not heard
from. The changes are ``HealthChanged`` events of each Active, published as an agent would.
JetStream does not fsync every write here (``sync_interval: always`` is off): the benchmark
measures the orchestrator and the page, not the disk.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from secured_bus import start_secured_server
from tandem.events.bus import Bus
from tandem.events.catalog import HealthChanged, NodeRoleAssumed, RoleChanged
from tandem.events.catalog.health import HealthChangedPayload
from tandem.events.catalog.roles import NodeRoleAssumedPayload, RoleChangedPayload
from tandem.events.catalog.vocabulary import HealthStatus, Identity, Role
from tandem.events.embedded import NatsServer, free_port
from tandem.events.envelope import Event
from tandem.events.settings import load_bus_settings, load_stream_settings

OPERATOR = "operator-token-for-the-console-bench-0123456789"
VIEWER = "viewer-token-for-the-console-bench-0123456789"
NODES = ("east", "west")


def cluster_name(i: int) -> str:
    return f"c{i:04d}"


def seed_events(n: int) -> list[Event]:
    """Each cluster: its two nodes' roles, then the role change that made ``east`` Active."""
    out: list[Event] = []
    for i in range(n):
        c = cluster_name(i)
        for node, identity, role in (
            ("east", Identity.PRIMARY, Role.ACTIVE),
            ("west", Identity.SECONDARY, Role.PASSIVE),
        ):
            payload = NodeRoleAssumedPayload(identity=identity, role=role, reason="seeded")
            out.append(NodeRoleAssumed(cluster=c, node=node, epoch=1, payload=payload))
        changed = RoleChangedPayload(
            active_node="east", previous_active=None, new_epoch=1, reason="seeded"
        )
        out.append(RoleChanged(cluster=c, node="east", epoch=1, payload=changed))
    return out


def health_change(i: int, status: HealthStatus, mark: str) -> HealthChanged:
    payload = HealthChangedPayload(
        application="web", plugin="http", status=status, previous=None, message=mark
    )
    return HealthChanged(cluster=cluster_name(i), node="east", epoch=1, payload=payload)


@dataclass
class ConsoleRig:
    clusters: int
    root: Path = field(init=False)
    nats: NatsServer | None = None
    api_port: int = 0
    orchestrator: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="tandem-bench-console-")).resolve()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start(self, timeout: float = 300) -> ConsoleRig:
        # Logins and TLS as deployed; this process (and so the orchestrator) is the admin.
        self.nats = start_secured_server(
            self.root / "nats", name="bench-console", sync_always=False
        )
        asyncio.run(self._seed())
        self.api_port = free_port()
        env = {
            **os.environ,
            "TANDEM_LOG_LEVEL": "WARNING",
            "TANDEM_BUS_SERVERS": self.nats.url,
            "TANDEM_ORCHESTRATOR_API_PORT": str(self.api_port),
            "TANDEM_ORCHESTRATOR_TOKENS": f"operator {OPERATOR};viewer {VIEWER}",
            # No agent answers: nothing may be judged gone during the run.
            "TANDEM_ORCHESTRATOR_FAILOVER_TIMEOUT_S": "86400",
        }
        with (self.root / "orchestrator.log").open("ab") as log:
            self.orchestrator = subprocess.Popen(
                [sys.executable, "-m", "tandem.orchestrator"],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._all_known():
                return self
            time.sleep(0.5)
        raise RuntimeError(f"the orchestrator did not show {self.clusters} clusters in {timeout}s")

    def _all_known(self) -> bool:
        try:
            answer = httpx.get(
                f"{self.url}/api/v1/clusters?limit=1",  # the count is in X-Total-Count
                headers={"Authorization": f"Bearer {VIEWER}"},
                timeout=30,
            )
        except httpx.HTTPError:
            return False
        if answer.status_code != 200:
            return False
        return int(answer.headers.get("x-total-count", "0")) >= self.clusters

    async def _seed(self) -> None:
        bus = await self.connect()
        try:
            await bus.provision(load_stream_settings())
            events = seed_events(self.clusters)
            for start in range(0, len(events), 1000):
                await bus.publish_many(events[start : start + 1000])
        finally:
            await bus.close()

    async def connect(self) -> Bus:
        assert self.nats is not None
        return await Bus.connect(load_bus_settings(servers=self.nats.url), name="bench-console")

    def orchestrator_cpu_s(self) -> float:
        """User + system CPU seconds the orchestrator used so far."""
        assert self.orchestrator is not None
        fields = Path(f"/proc/{self.orchestrator.pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return (int(fields[11]) + int(fields[12])) / ticks

    def close(self) -> None:
        if self.orchestrator is not None and self.orchestrator.poll() is None:
            self.orchestrator.terminate()
            try:
                self.orchestrator.wait(15)
            except subprocess.TimeoutExpired:
                self.orchestrator.kill()
                self.orchestrator.wait(5)
        if self.nats is not None:
            self.nats.stop()
        shutil.rmtree(self.root, ignore_errors=True)
