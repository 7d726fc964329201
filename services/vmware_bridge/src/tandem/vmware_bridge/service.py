"""Assembly of the vmware_bridge service: `run(settings, bus)`."""

from __future__ import annotations

from tandem.events.bus import Bus
from tandem.events.runtime import ServiceSpec, idle_until_cancelled, service_lifetime
from tandem.vmware_bridge.settings import VmwareBridgeSettings, load


async def run(settings: VmwareBridgeSettings, bus: Bus) -> None:
    async with service_lifetime(bus, "vmware_bridge", node=settings.instance):
        await idle_until_cancelled()


SERVICE = ServiceSpec(name="vmware_bridge", load_settings=load, run=run)
