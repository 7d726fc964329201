"""A 3-node JetStream cluster with R3 streams: killing the stream leader loses no acknowledged
event, and publishing resumes on the new leader. Real nats-server processes, killed with SIGKILL."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import alert
from tandem.events.bus import Bus
from tandem.events.embedded import NatsCluster
from tandem.events.secure_bus import SecureBusFiles
from tandem.events.settings import load_bus_settings, load_stream_settings
from tandem.events.subjects import EVENTS_STREAM

pytestmark = pytest.mark.system


@pytest.fixture
def cluster(tmp_path: Path, nats_binary: str, bus_secrets: SecureBusFiles) -> Iterator[NatsCluster]:
    c = NatsCluster(base_dir=tmp_path, size=3, extra_config=bus_secrets.server_config()).start()
    yield c
    c.stop()


async def until_ok(what: str, attempt, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    """Retry ``attempt`` (a coroutine factory) while the cluster elects leaders."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await attempt()
        except Exception as exc:
            if loop.time() > deadline:
                raise AssertionError(f"{what} did not succeed within {timeout}s: {exc}") from exc
            await asyncio.sleep(0.2)


async def test_killing_the_stream_leader_loses_no_acknowledged_event(cluster: NatsCluster) -> None:
    settings = load_bus_settings(
        servers=",".join(cluster.urls), reconnect_wait_s=0.2, request_timeout_s=2
    )
    async with await Bus.connect(settings) as bus:
        await until_ok(
            "provisioning R3 streams", lambda: bus.provision(load_stream_settings(replicas=3))
        )
        info = await bus.js.stream_info(EVENTS_STREAM)
        assert info.config.num_replicas == 3

        acked: list[str] = []
        killed: list[str] = []

        async def publisher() -> None:
            for i in range(300):
                event = alert(n=i)
                await until_ok(f"publishing event {i}", lambda e=event: bus.publish(e, timeout=2))
                acked.append(event.id)
                if i == 100:
                    killed.append(await kill_leader())

        async def kill_leader() -> str:
            leader = (await bus.js.stream_info(EVENTS_STREAM)).cluster.leader
            assert leader is not None
            await asyncio.to_thread(cluster.server_named(leader).kill)
            return leader

        await asyncio.wait_for(publisher(), timeout=180)
        assert len(acked) == 300

        new_info = await until_ok("reading stream info", lambda: bus.js.stream_info(EVENTS_STREAM))
        assert new_info.cluster.leader not in (None, killed[0])
        assert new_info.state.messages == 300, "every acknowledged event is stored exactly once"
        stored = []
        for seq in range(new_info.state.first_seq, new_info.state.last_seq + 1):
            msg = await until_ok(
                f"reading seq {seq}", lambda s=seq: bus.js.get_msg(EVENTS_STREAM, s)
            )
            stored.append(msg.headers["Nats-Msg-Id"])
        assert stored == acked
