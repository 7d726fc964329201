"""A protected pair (two node agents with the demo app, replicating its folder) and an
orchestrator, all real processes on one real nats-server, for system tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from agent_rig import AgentProcess, ServiceProcess, demo_app_toml, node_toml, write_agent
from conftest import reset_bus
from helpers import eventually
from tandem.events.bus import Bus
from tandem.events.embedded import free_port
from tandem.events.settings import load_bus_settings, load_stream_settings

OPERATOR = "operator-token-for-tests-0123456789"
VIEWER = "viewer-token-for-tests-0123456789"


@dataclass
class Pair:
    cluster: str
    tmp: Path
    bus_url: str
    public_port: int | None
    agents: dict[str, AgentProcess] = field(default_factory=dict)
    orchestrators: list[ServiceProcess] = field(default_factory=list)
    api_ports: list[int] = field(default_factory=list)

    def data(self, node: str) -> Path:
        return self.tmp / node / "data"

    def add_node(
        self,
        node: str,
        identity: str,
        *,
        initial_role: str,
        extra: str = "",
        public: bool = True,
        bus_extra: str = "",
    ) -> AgentProcess:
        peers = [n for n in ("primary", "secondary") if n != node]
        self.data(node).mkdir(parents=True, exist_ok=True)
        app_port = free_port()
        toml = node_toml(
            self.cluster,
            node,
            self.tmp / node / "state",
            self.bus_url,
            identity=identity,
            peers=peers,
            initial_role=initial_role,
            protected_root=self.data(node),
            bus_extra=bus_extra,
        )
        toml += demo_app_toml(self.data(node), app_port, self.public_port if public else None)
        agent = write_agent(self.tmp, node, toml + extra)
        self.agents[node] = agent
        return agent

    def add_orchestrator(
        self, instance: str = "orchestrator", extra_env: dict[str, str] | None = None
    ) -> ServiceProcess:
        port = free_port()
        env = {
            "TANDEM_BUS_SERVERS": self.bus_url,
            "TANDEM_ORCHESTRATOR_INSTANCE": instance,
            "TANDEM_ORCHESTRATOR_API_PORT": str(port),
            "TANDEM_ORCHESTRATOR_TOKENS": f"operator {OPERATOR};viewer {VIEWER}",
            "TANDEM_ORCHESTRATOR_STEP_TIMEOUT_S": "20",
            # A durable outbox, as tandem up and the compose file run it.
            "TANDEM_ORCHESTRATOR_STATE_DIR": str(self.tmp / f"{instance}-state"),
            **(extra_env or {}),
        }
        log = self.tmp / f"{instance}.log"
        orchestrator = ServiceProcess("tandem.orchestrator", env, log)
        self.orchestrators.append(orchestrator)
        self.api_ports.append(port)
        return orchestrator

    def api(self, index: int = 0, token: str = OPERATOR) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.api_ports[index]}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=10,
        )

    def stop_all(self) -> None:
        for agent in self.agents.values():
            agent.stop()
        for orchestrator in self.orchestrators:
            orchestrator.stop()


async def leader_ready(pair: Pair, index: int = 0, timeout: float = 60) -> None:
    async def ready() -> bool:
        try:
            async with pair.api(index) as api:
                answer = await api.get("/healthz")
                return answer.status_code == 200 and bool(answer.json().get("leader"))
        except httpx.HTTPError:
            return False

    await eventually(ready, timeout, f"orchestrator {index} to lead")


async def api_up(pair: Pair, index: int, timeout: float = 60) -> None:
    async def up() -> bool:
        try:
            async with pair.api(index) as api:
                return (await api.get("/healthz")).status_code == 200
        except httpx.HTTPError:
            return False

    await eventually(up, timeout, f"orchestrator {index}'s API")


async def cluster_view(pair: Pair, index: int = 0) -> dict[str, Any]:
    async with pair.api(index) as api:
        answer = await api.get(f"/api/v1/clusters/{pair.cluster}")
        answer.raise_for_status()
        view: dict[str, Any] = answer.json()
        return view


async def wait_saga(
    pair: Pair, saga_id: str, timeout: float = 90, index: int = 0
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    last: dict[str, Any] = {}
    while loop.time() < deadline:
        try:
            async with pair.api(index) as api:
                answer = await api.get(f"/api/v1/sagas/{saga_id}")
            if answer.status_code == 200:
                last = answer.json()
                if last["state"] != "running":
                    return last
        except httpx.HTTPError:
            pass
        await asyncio.sleep(0.2)
    raise AssertionError(f"saga {saga_id} still running after {timeout}s: {last}")


async def both_nodes_ready(pair: Pair) -> None:
    """The Active serves (role active, app healthy) and the Passive replicates, verified."""

    async def ready() -> bool:
        try:
            view = await cluster_view(pair)
        except httpx.HTTPError:
            return False
        nodes = {n["name"]: n for n in view["nodes"]}
        active = nodes.get(view.get("active") or "")
        others = [n for name, n in nodes.items() if name != view.get("active")]
        return (
            active is not None
            and active["alive"]
            and active["role"] == "active"
            and active["checks"].get("web-http") == "ok"
            and any(
                n["alive"]
                and n["role"] == "passive"
                # verified: the guard refuses a move to a replica out of sync or syncing
                and n.get("replication") not in ("out_of_sync", "syncing")
                for n in others
            )
        )

    await eventually(ready, 90, "the pair to be up (Active serving, Passive alive)")


async def public_get(port: int, path: str) -> httpx.Response | None:
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=2) as client:
            return await client.get(path)
    except httpx.HTTPError:
        return None


async def public_put(port: int, path: str, body: bytes) -> httpx.Response:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5) as client:
        return await client.put(path, content=body)


async def start_pair(pair: Pair, extra: str = "") -> None:
    """primary Active, secondary Passive (both with ``extra`` in their config), one
    orchestrator; returns once it leads and both nodes are ready."""
    pair.add_node("primary", "primary", initial_role="active", extra=extra).start()
    pair.add_node("secondary", "secondary", initial_role="passive", extra=extra).start()
    pair.add_orchestrator().start()
    await leader_ready(pair)
    await both_nodes_ready(pair)


async def empty_bus(bus_url: str) -> None:
    """The bus as a pair starts on: nothing left by earlier tests, streams and buckets there."""
    async with await Bus.connect(load_bus_settings(servers=[bus_url]), name="test") as bus:
        await reset_bus(bus)
        await bus.provision(load_stream_settings())


def running_pair(
    bus_url: str,
    tmp: Path,
    cluster: str,
    start: Callable[[Pair], Awaitable[None]] = start_pair,
    *,
    public: bool = True,
) -> Iterator[Pair]:
    """A module fixture's pair: on an empty bus, started by ``start``, stopped at the end."""
    pair = Pair(
        cluster=cluster, tmp=tmp, bus_url=bus_url, public_port=free_port() if public else None
    )

    async def begin() -> None:
        await empty_bus(bus_url)
        await start(pair)

    try:
        asyncio.run(begin())
        yield pair
    finally:
        pair.stop_all()
