"""Assembly of the orchestrator service: ``run(settings, bus)``.

The state projection replays ``TANDEM_EVENTS`` and follows it; liveness watches heartbeats
and leases; the leader lease decides which replica acts; the REST API serves every replica
(mutations are refused with 409 by a follower).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from tandem.events.bus import Bus
from tandem.events.runtime import ServiceSpec, service_lifetime
from tandem.events.settings import SettingsError
from tandem.orchestrator.api.app import create_app
from tandem.orchestrator.api.auth import load_tokens
from tandem.orchestrator.api.server import ServerStartError, serve
from tandem.orchestrator.core import Orchestrator
from tandem.orchestrator.decisions import Decisions
from tandem.orchestrator.leader import LeaderLease
from tandem.orchestrator.liveness import Liveness
from tandem.orchestrator.settings import OrchestratorSettings, load, load_file
from tandem.orchestrator.state import ClusterState

log = logging.getLogger(__name__)


async def run(settings: OrchestratorSettings, bus: Bus) -> None:
    s = settings
    file = load_file(s.config)
    tokens = load_tokens(s.tokens_file, s.tokens, env_name="TANDEM_ORCHESTRATOR_TOKENS")
    state = ClusterState()
    liveness = Liveness(bus, default_timeout_s=s.failover_timeout_s)
    orchestrator: Orchestrator | None = None

    async def elected() -> None:
        await state.caught_up.wait()
        if orchestrator is not None:
            await orchestrator.resume()

    leader = LeaderLease(
        bus, s.instance, ttl_s=s.leader_ttl_s, renew_every_s=s.leader_renew_s, on_elected=elected
    )
    orchestrator = Orchestrator(bus, s, file, state, liveness, leader)
    app = create_app(orchestrator, tokens)
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(state.run(bus))
        tasks.create_task(liveness.run())
        ready = asyncio.Event()
        api = tasks.create_task(serve_api(app, s.api_host, s.api_port, ready))
        await asyncio.wait(
            {api, asyncio.ensure_future(ready.wait())},
            timeout=30,
            return_when=asyncio.FIRST_COMPLETED,
        )
        listen = {"api": f"http://{s.api_host}:{app.state.port}"} if ready.is_set() else {}
        async with service_lifetime(bus, "orchestrator", node=s.instance, listen=listen):
            await state.wait_caught_up(timeout=120)
            tasks.create_task(leader.run())
            tasks.create_task(Decisions(orchestrator).run())
            try:
                await asyncio.Event().wait()
            finally:
                await leader.resign()


async def serve_api(app: Any, host: str, port: int, ready: asyncio.Event) -> None:
    try:
        await serve(app, host, port, ready=ready)
    except ServerStartError as exc:  # a taken port is a configuration problem: exit 2
        raise SettingsError(f"{exc} (set TANDEM_ORCHESTRATOR_API_HOST / _API_PORT)") from None


SERVICE = ServiceSpec(name="orchestrator", load_settings=load, run=run)
