"""The replicator of one node: plays the source side while the node is Active and the target
side while it is Passive, as ``tandem_roles`` says.

Until the orchestrator drives role changes step by step (switchover and failover sagas), the
node follows the role record: when it changes, the current side stops (the source drains its
send queue) and the other side starts. Each decision is logged with its reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging

from tandem.events.bus import Bus
from tandem.events.roles import RoleRecord, claim_first_role, read_role
from tandem.events.subjects import ROLES_BUCKET
from tandem.replicator.settings import ReplicatorSettings
from tandem.replicator.source import SourceSide
from tandem.replicator.target import TargetSide

log = logging.getLogger(__name__)


async def current_role(bus: Bus, settings: ReplicatorSettings, poll_s: float = 1.0) -> RoleRecord:
    kv = await bus.kv(ROLES_BUCKET)
    while True:
        record, _ = await read_role(kv, settings.cluster)
        if record is not None:
            return record
        if settings.initial_role == "active":
            return await claim_first_role(kv, settings.cluster, settings.node, "first pairing")
        log.info("no role record for %s yet; waiting for the Active", settings.cluster)
        await asyncio.sleep(poll_s)


async def run_node(settings: ReplicatorSettings, bus: Bus, poll_s: float = 1.0) -> None:
    record = await current_role(bus, settings, poll_s)
    while True:
        active = record.active == settings.node
        epoch = record.epoch
        log.info(
            "%s is %s at epoch %s",
            settings.node,
            "Active: source" if active else "Passive: target",
            epoch,
        )
        side: SourceSide | TargetSide
        if active:
            side = SourceSide(settings, bus, epoch)
        else:
            side = TargetSide(settings, bus, functools.partial(int, epoch))
        task = asyncio.create_task(side.run())
        try:
            record = await _changed(bus, settings, record, task, poll_s)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def _changed(
    bus: Bus,
    settings: ReplicatorSettings,
    record: RoleRecord,
    task: asyncio.Task[None],
    poll_s: float,
) -> RoleRecord:
    """Wait until the role record changes (returned) or the side ends (its error is raised)."""
    while True:
        done, _ = await asyncio.wait({task}, timeout=poll_s)
        if done:
            task.result()
            raise RuntimeError("replication side ended by itself")
        new = await current_role(bus, settings, poll_s)
        if new != record:
            log.info("role record changed: %s at epoch %s (%s)", new.active, new.epoch, new.reason)
            return new
