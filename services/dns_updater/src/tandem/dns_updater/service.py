"""Assembly of the dns_updater service: `run(settings, bus)`."""

from __future__ import annotations

from tandem.dns_updater.settings import DnsUpdaterSettings, load
from tandem.events.bus import Bus
from tandem.events.runtime import ServiceSpec, idle_until_cancelled, service_lifetime


async def run(settings: DnsUpdaterSettings, bus: Bus) -> None:
    async with service_lifetime(bus, "dns_updater", node=settings.instance):
        await idle_until_cancelled()


SERVICE = ServiceSpec(name="dns_updater", load_settings=load, run=run)
