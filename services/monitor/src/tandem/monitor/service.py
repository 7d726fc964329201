"""Assembly of the monitor on one node: `run(settings, bus)`."""

from __future__ import annotations

from tandem.events.bus import Bus
from tandem.events.runtime import ServiceSpec, idle_until_cancelled, service_lifetime
from tandem.monitor.settings import MonitorSettings, load


async def run(settings: MonitorSettings, bus: Bus) -> None:
    async with service_lifetime(bus, "monitor", cluster=settings.cluster, node=settings.node):
        await idle_until_cancelled()


SERVICE = ServiceSpec(name="monitor", load_settings=load, run=run)
