"""Assembly of the orchestrator service: ``run(settings, bus)``.

The state projection replays ``TANDEM_EVENTS`` and follows it; liveness watches heartbeats
and leases; the leader lease decides which replica acts; the REST API serves every replica
(mutations are refused with 409 by a follower).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from typing import Any

from tandem.events.bus import Bus
from tandem.events.outbox import Outbox
from tandem.events.provisioning import restore_bucket
from tandem.events.runtime import ServiceSpec, service_lifetime
from tandem.events.settings import SettingsError, load_stream_settings
from tandem.events.subjects import EVENTS_STREAM, LEASES_BUCKET
from tandem.orchestrator.api.app import create_app
from tandem.orchestrator.api.auth import load_tokens
from tandem.orchestrator.api.server import ServerStartError, serve
from tandem.orchestrator.core import Orchestrator
from tandem.orchestrator.decisions import Decisions
from tandem.orchestrator.leader import LeaderLease
from tandem.orchestrator.liveness import Liveness
from tandem.orchestrator.settings import OrchestratorSettings, load, load_file
from tandem.orchestrator.state import ClusterState
from tandem.orchestrator.supervise import supervise

log = logging.getLogger(__name__)


async def run(settings: OrchestratorSettings, bus: Bus) -> None:
    s = settings
    file = load_file(s.config)
    env_tokens = s.tokens.get_secret_value() if s.tokens is not None else None
    tokens = load_tokens(s.tokens_file, env_tokens, env_name="TANDEM_ORCHESTRATOR_TOKENS")
    state = ClusterState()
    streams = load_stream_settings()
    liveness = Liveness(
        bus,
        default_timeout_s=s.failover_timeout_s,
        # In memory: gone after the whole bus restarted; without it nobody renews a lease.
        restore_leases=lambda: restore_bucket(bus.js, streams, LEASES_BUCKET),
    )
    if s.state_dir is None:
        log.warning(
            "no TANDEM_ORCHESTRATOR_STATE_DIR: the outbox is in memory (an event not yet "
            "stored when this process is killed is lost)"
        )
        outbox = Outbox(bus)
    else:
        outbox = Outbox(bus, path=s.state_dir / "outbox")
    orchestrator: Orchestrator | None = None

    async def elected() -> None:
        await state.caught_up.wait()
        await caught_up_to_now(bus, state)
        if orchestrator is not None:
            await orchestrator.resume()

    leader = LeaderLease(
        bus, s.instance, ttl_s=s.leader_ttl_s, renew_every_s=s.leader_renew_s, on_elected=elected
    )
    orchestrator = Orchestrator(bus, s, file, state, liveness, leader, outbox=outbox)
    app = create_app(orchestrator, tokens)
    async with asyncio.TaskGroup() as tasks:
        # Every loop survives a bus fault: started again, the reason logged once.
        tasks.create_task(supervise("the state projection", lambda: state.run(bus)))
        tasks.create_task(supervise("liveness", liveness.run))
        tasks.create_task(supervise("the outbox", outbox.run))
        ready = asyncio.Event()
        api = tasks.create_task(serve_api(app, s.api_host, s.api_port, ready))
        await asyncio.wait(
            {api, asyncio.ensure_future(ready.wait())},
            timeout=30,
            return_when=asyncio.FIRST_COMPLETED,
        )
        listen = {"api": f"http://{s.api_host}:{app.state.port}"} if ready.is_set() else {}
        async with service_lifetime(bus, "orchestrator", node=s.instance, listen=listen):
            await wait_replayed(state)
            settle_heap()
            tasks.create_task(supervise("the leader lease", leader.run))
            tasks.create_task(supervise("decisions", Decisions(orchestrator).run))
            tasks.create_task(supervise("the lag history", orchestrator.lag.run))
            try:
                await asyncio.Event().wait()
            finally:
                await leader.resign()
                if not await outbox.flush(timeout=3):
                    log.warning("stopping with %s events not stored", len(outbox))


def settle_heap() -> None:
    """Once replayed, the state is long-lived: moved out of the garbage collector's full
    passes, each of which would otherwise go through all of it holding the loop (~0.1 s at
    2,000 clusters; the API's views, made by the thousand, bring those passes on)."""
    gc.collect()
    gc.freeze()
    log.debug(
        "%d objects of the replayed state left out of full collections", gc.get_freeze_count()
    )


async def wait_replayed(state: ClusterState) -> None:
    """Wait (for as long as it takes: the bus may be away) for the first replay."""
    waited = 0
    while not state.caught_up.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(state.caught_up.wait(), 30)
        waited += 30
        if not state.caught_up.is_set():
            log.warning("still replaying the event stream after %ss (is the bus there?)", waited)


async def caught_up_to_now(bus: Bus, state: ClusterState, timeout: float = 10.0) -> None:
    """Before acting as leader (again): fold the stream up to its end as it is now, so that
    sagas another leader ended meanwhile are not resumed. Bounded: a stream that cannot be
    read leaves the state as it is (the sagas' own checks still hold)."""
    try:
        info = await asyncio.wait_for(bus.js.stream_info(EVENTS_STREAM), 5)
    except Exception as exc:
        log.warning("the end of the event stream is unknown (%s): resuming from the state", exc)
        return
    last = info.state.last_seq
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while state.position < last and loop.time() < deadline:  # noqa: ASYNC110 - folded by its own task
        await asyncio.sleep(0.05)
    if state.position < last:
        log.warning("state at %s, the stream at %s: resuming anyway", state.position, last)


async def serve_api(app: Any, host: str, port: int, ready: asyncio.Event) -> None:
    try:
        await serve(app, host, port, ready=ready)
    except ServerStartError as exc:  # a taken port is a configuration problem: exit 2
        raise SettingsError(f"{exc} (set TANDEM_ORCHESTRATOR_API_HOST / _API_PORT)") from None


SERVICE = ServiceSpec(name="orchestrator", load_settings=load, run=run)
