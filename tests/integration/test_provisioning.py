"""Provisioning is idempotent and applies the configured limits."""

from __future__ import annotations

from nats.js.api import StorageType

from tandem.events.bus import Bus
from tandem.events.settings import load_stream_settings
from tandem.events.subjects import (
    CONFIG_BUCKET,
    DLQ_STREAM,
    EVENTS_STREAM,
    JOURNAL_STREAM,
    LEASES_BUCKET,
    ROLES_BUCKET,
)


async def test_provisioning_twice_changes_nothing(bus: Bus) -> None:
    lines = await bus.provision(load_stream_settings())
    assert "stream TANDEM_EVENTS unchanged" in lines
    for stream in (EVENTS_STREAM, JOURNAL_STREAM, DLQ_STREAM):
        info = await bus.js.stream_info(stream)
        assert info.config.storage == StorageType.FILE
    for bucket in (ROLES_BUCKET, CONFIG_BUCKET, LEASES_BUCKET):
        status = await (await bus.kv(bucket)).status()
        assert status.bucket == bucket


async def test_limits_follow_the_settings(bus: Bus) -> None:
    settings = load_stream_settings(events_max_age_s=3600)
    assert "stream TANDEM_EVENTS updated" in await bus.provision(settings)
    info = await bus.js.stream_info(EVENTS_STREAM)
    assert info.config.max_age == 3600
    assert info.config.subjects == ["tandem.evt.>"]


async def test_services_do_not_change_limits_an_operator_set(bus: Bus) -> None:
    await bus.provision(load_stream_settings(events_max_age_s=3600))
    lines = await bus.provision(load_stream_settings(), update_existing=False)
    assert "stream TANDEM_EVENTS exists with other limits; left as it is" in lines
    assert (await bus.js.stream_info(EVENTS_STREAM)).config.max_age == 3600
