"""A node agent SIGKILLed while the bus was away, with events in its outbox: after its restart
every one of them is in the stream, once. Real processes throughout: a nats-server of this
test's own (frozen with SIGSTOP, so publishes time out as in a partition), the agent and its
guard, the demo application."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from nats.js.api import ConsumerConfig, DeliverPolicy

from agent_rig import AgentProcess, demo_app_toml, node_toml, write_agent
from helpers import eventually
from tandem.events.bus import Bus
from tandem.events.embedded import NatsServer, free_port
from tandem.events.outbox_file import OutboxFile
from tandem.events.secure_bus import SecureBusFiles
from tandem.events.settings import load_bus_settings, load_stream_settings
from tandem.events.subjects import EVENTS_STREAM, events_filter

pytestmark = pytest.mark.system

CLUSTER = "outbox"


@pytest.fixture
def server(tmp_path: Path, nats_binary: str, bus_secrets: SecureBusFiles) -> Iterator[NatsServer]:
    s = NatsServer(store_dir=tmp_path / "nats", extra_config=bus_secrets.server_config()).start()
    yield s
    s.process and s.process.send_signal(signal.SIGCONT)
    s.stop()


async def stored_ids(bus: Bus, cluster: str) -> Counter[str]:
    """How many times each event id of ``cluster`` is stored in the stream, read from it."""
    info = await bus.js.stream_info(EVENTS_STREAM)
    sub = await bus.js.pull_subscribe(
        events_filter(cluster),
        stream=EVENTS_STREAM,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
    )
    seen: Counter[str] = Counter()
    try:
        while True:
            try:
                msgs = await sub.fetch(256, timeout=1.0)
            except TimeoutError:
                break
            for msg in msgs:
                seen[(msg.headers or {})["Nats-Msg-Id"]] += 1
                await msg.ack()
            if msgs and msgs[-1].metadata.sequence.stream >= info.state.last_seq:
                break
    finally:
        await sub.unsubscribe()
    return seen


@pytest.mark.timeout(180)
async def test_events_queued_when_the_agent_was_killed_are_stored_once_after_restart(
    server: NatsServer, tmp_path: Path
) -> None:
    settings = load_bus_settings(servers=server.url, request_timeout_s=2)
    async with await Bus.connect(settings) as bus:
        await bus.provision(load_stream_settings())
        state = tmp_path / "state"
        port = free_port()
        toml = node_toml(CLUSTER, "n1", state, server.url) + demo_app_toml(tmp_path / "d", port)
        agent: AgentProcess = write_agent(tmp_path, "n1", toml).start()
        try:
            await eventually(
                lambda: (state / "identity.json").exists(), 60, "the agent serving as Active"
            )
            await eventually_stored(bus, "NodeRoleAssumed")

            server.process.send_signal(signal.SIGSTOP)  # type: ignore[union-attr]
            outbox = state / "outbox"
            # Bus away: the lease lapses, the node fences itself, and what it says about it
            # waits in the outbox.
            await eventually(
                lambda: any(s.event.type == "NodeSelfFenced" for s in OutboxFile(outbox).pending()),
                60,
                "NodeSelfFenced queued in the agent's outbox",
            )
            agent.signal(signal.SIGKILL)
            agent.proc.wait(10)  # type: ignore[union-attr]
            queued = [s.event for s in OutboxFile(outbox).pending()]
            assert queued, "the killed agent left its unsent events in its outbox file"

            server.process.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
            agent.start()
            wanted = {e.id for e in queued}

            async def all_stored() -> bool:
                return wanted <= set(await stored_ids(bus, CLUSTER))

            await eventually_async(all_stored, 90, "every queued event in the stream")
            counts = await stored_ids(bus, CLUSTER)
            assert {i: counts[i] for i in wanted} == dict.fromkeys(wanted, 1)
            types = {e.type for e in queued}
            assert "NodeSelfFenced" in types
        finally:
            server.process.send_signal(signal.SIGCONT)  # type: ignore[union-attr]
            agent.stop()
        assert "Traceback" not in agent.log.read_text(errors="replace"), agent.tail()


async def eventually_stored(bus: Bus, event_type: str) -> None:
    sub = await bus.js.pull_subscribe(
        events_filter(CLUSTER, event_type),
        stream=EVENTS_STREAM,
        config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL),
    )
    try:
        for _ in range(60):
            try:
                if await sub.fetch(1, timeout=1.0):
                    return
            except TimeoutError:
                continue
        raise AssertionError(f"no {event_type} stored within a minute")
    finally:
        await sub.unsubscribe()


async def eventually_async(check, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not within {timeout}s")
        await asyncio.sleep(0.5)
