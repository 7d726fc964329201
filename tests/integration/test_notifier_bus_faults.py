"""The notifier through a bus outage: its own nats-server stopped and started again while it
runs; it keeps running, and what comes after the outage is delivered, once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from helpers import eventually, running
from notifier_rig import consumer_exists, events_of, file_route, lines, raised, write_config
from tandem.events.bus import Bus
from tandem.events.embedded import NatsServer, free_port
from tandem.events.secure_bus import SecureBusFiles
from tandem.events.settings import load_bus_settings, load_stream_settings
from tandem.events.transient import retry_transient
from tandem.notifier.service import run
from tandem.notifier.settings import NotifierSettings

pytestmark = pytest.mark.timeout(180)


async def test_the_notifier_rides_out_a_bus_outage(
    tmp_path: Path, bus_secrets: SecureBusFiles
) -> None:
    server = NatsServer(
        store_dir=tmp_path / "nats",
        name="notifier-faults",
        port=free_port(),
        extra_config=bus_secrets.server_config(),
    ).start()
    bus = await Bus.connect(load_bus_settings(servers=[server.url]), name="tandem-test-notifier")
    journal = tmp_path / "journal.jsonl"
    config = write_config(tmp_path / "notifier.toml", file_route("journal", journal))
    settings = NotifierSettings(config=config, state_dir=tmp_path / "state")
    try:
        await bus.provision(load_stream_settings())
        async with running(run(settings, bus)) as notifier:
            await eventually(lambda: consumer_exists(bus), 20, "the consumer")
            await bus.publish(raised("before.outage"))
            await eventually(lambda: len(lines(journal)) == 1, 20, "the first alert")
            server.stop()
            await asyncio.sleep(3)  # fetches, acks and the outbox fail meanwhile
            assert not notifier.done()
            server.start()
            await retry_transient(
                "publishing after the outage",
                lambda: bus.publish(raised("after.outage"), timeout=2),
                deadline_s=60,
            )
            await eventually(lambda: len(lines(journal)) == 2, 60, "the alert after the outage")
            await eventually(lambda: _delivered(bus, 2), 60, "both NotificationDelivered stored")
            assert not notifier.done()
        codes = [line["alerts"][0]["labels"]["alertname"] for line in lines(journal)]
        assert codes == ["before.outage", "after.outage"]
    finally:
        await bus.close()
        server.stop()


async def _delivered(bus: Bus, n: int) -> bool:
    return len(await events_of(bus, "NotificationDelivered")) == n
