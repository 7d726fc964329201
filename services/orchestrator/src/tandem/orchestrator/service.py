"""Assembly of the orchestrator service: `run(settings, bus)`."""

from __future__ import annotations

from tandem.events.bus import Bus
from tandem.events.runtime import ServiceSpec, idle_until_cancelled, service_lifetime
from tandem.orchestrator.settings import OrchestratorSettings, load


async def run(settings: OrchestratorSettings, bus: Bus) -> None:
    async with service_lifetime(bus, "orchestrator", node=settings.instance):
        await idle_until_cancelled()


SERVICE = ServiceSpec(name="orchestrator", load_settings=load, run=run)
