"""Assembly of the node agent: the node-side services of one node, in one process."""

from __future__ import annotations

import asyncio

from tandem.agent.settings import AgentSettings, load
from tandem.events.bus import Bus
from tandem.events.runtime import ServiceSpec, service_lifetime
from tandem.monitor.service import run as run_monitor
from tandem.monitor.settings import MonitorSettings
from tandem.replicator.service import run as run_replicator
from tandem.replicator.settings import ReplicatorSettings


async def run(settings: AgentSettings, bus: Bus) -> None:
    async with service_lifetime(bus, "agent", cluster=settings.cluster, node=settings.node):
        # If one part ends (it crashed), the TaskGroup cancels the other and the agent exits
        # with the error, so its supervisor restarts the whole node side together.
        async with asyncio.TaskGroup() as parts:
            parts.create_task(
                run_replicator(
                    ReplicatorSettings(cluster=settings.cluster, node=settings.node), bus
                )
            )
            parts.create_task(
                run_monitor(MonitorSettings(cluster=settings.cluster, node=settings.node), bus)
            )


SERVICE = ServiceSpec(name="agent", load_settings=load, run=run)
