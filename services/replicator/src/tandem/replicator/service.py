"""Assembly of the replicator on one node: ``run(settings, bus)``."""

from __future__ import annotations

from tandem.events.bus import Bus
from tandem.events.runtime import ServiceSpec, idle_until_cancelled, service_lifetime
from tandem.replicator.node import run_node
from tandem.replicator.settings import ReplicatorSettings, load


async def run(settings: ReplicatorSettings, bus: Bus) -> None:
    async with service_lifetime(bus, "replicator", cluster=settings.cluster, node=settings.node):
        if settings.protected_root is None:
            await idle_until_cancelled()
        else:
            await run_node(settings, bus)


SERVICE = ServiceSpec(name="replicator", load_settings=load, run=run)
