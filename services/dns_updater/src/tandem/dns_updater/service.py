"""Assembly of the dns_updater service: ``run(settings, bus)``.

One durable consumer per configured cluster (``<instance>-<cluster>``, on that cluster's
``RoleChanged`` events), so that a slow or failing name of one cluster never delays another,
and one for the operators' reconcile requests (``<instance>-reconcile``), with the
reconcile's check at start and every ``[reconcile] interval_s`` (``reconcile.py``).
``ServiceStarted`` is published once every consumer exists: events from then on are seen.
"""

from __future__ import annotations

import asyncio
import logging

from nats.js.errors import NotFoundError

from tandem.dns_updater.config import ReconcileConfig, load_config
from tandem.dns_updater.follower import ClusterFollower
from tandem.dns_updater.mover import Mover
from tandem.dns_updater.reconcile import Reconciler
from tandem.dns_updater.settings import DnsUpdaterSettings, load
from tandem.events.bus import Bus
from tandem.events.runtime import ServiceSpec, service_lifetime
from tandem.events.subjects import EVENTS_STREAM

log = logging.getLogger(__name__)

CONSUMERS_READY_TIMEOUT_S = 30.0


async def run(settings: DnsUpdaterSettings, bus: Bus) -> None:
    followers: list[ClusterFollower] = []
    reconcile = ReconcileConfig()
    if settings.config is None:
        log.warning("no TANDEM_DNS_UPDATER_CONFIG: no DR name to move")
    else:
        config = load_config(settings.config)
        reconcile = config.reconcile
        mover = Mover(config)  # one for all: the key files are read again when they change
        followers = [
            ClusterFollower(bus, cluster, entries, config, instance=settings.instance, mover=mover)
            for cluster, entries in config.clusters().items()
        ]
        for f in followers:
            names = ", ".join(e.display_name for e in f.entries)
            log.info("cluster %s: moving %s (consumer %s)", f.cluster, names, f.durable)
    reconciler = Reconciler(
        bus,
        followers,
        instance=settings.instance,
        at_start=reconcile.at_start,
        interval_s=reconcile.interval_s,
    )
    durables = [f.durable for f in followers] + [reconciler.durable]
    async with asyncio.TaskGroup() as tasks:
        for follower in followers:
            tasks.create_task(follower.consumer().run(), name=follower.durable)
        tasks.create_task(reconciler.consumer().run(), name=reconciler.durable)
        await asyncio.wait_for(consumers_exist(bus, durables), CONSUMERS_READY_TIMEOUT_S)
        async with service_lifetime(bus, "dns_updater", node=settings.instance):
            await reconciler.run_periodic()


async def consumers_exist(bus: Bus, durables: list[str]) -> None:
    """Return once every durable consumer named is on the events stream."""
    missing = list(durables)
    while missing:
        try:
            await bus.js.consumer_info(EVENTS_STREAM, missing[0])
            missing.pop(0)
        except NotFoundError:
            await asyncio.sleep(0.05)


SERVICE = ServiceSpec(name="dns_updater", load_settings=load, run=run)
