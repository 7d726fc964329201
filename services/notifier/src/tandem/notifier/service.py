"""Assembly of the notifier service: ``run(settings, bus)``.

The routes of ``TANDEM_NOTIFIER_CONFIG``, the ledger and state in
``TANDEM_NOTIFIER_STATE_DIR``, a durable outbox there for what it records
(``NotificationDelivered`` / ``NotificationFailed``, ``notifier.route_failing``), and the
dispatcher (``dispatch.py``). ``ServiceStarted`` is published once the consumer exists.
"""

from __future__ import annotations

import asyncio
import logging

from tandem.events.bus import Bus
from tandem.events.outbox import Outbox
from tandem.events.runtime import ServiceSpec, idle_until_cancelled, service_lifetime
from tandem.events.transient import keep_running
from tandem.notifier.book import Book
from tandem.notifier.config import NotifierConfig, load_config
from tandem.notifier.dispatch import Dispatcher
from tandem.notifier.ledger import Ledger
from tandem.notifier.policy import Policy
from tandem.notifier.route import RouteRunner
from tandem.notifier.settings import NotifierSettings, load

log = logging.getLogger(__name__)

CONSUMER_READY_TIMEOUT_S = 60.0


async def run(settings: NotifierSettings, bus: Bus) -> None:
    config = load_config(settings.config) if settings.config is not None else NotifierConfig()
    if not config.routes or settings.state_dir is None:
        log.warning("no route configured (TANDEM_NOTIFIER_CONFIG): nothing is sent")
        async with service_lifetime(bus, "notifier", node=settings.instance):
            await idle_until_cancelled()
        return
    state_dir = settings.state_dir
    ledger = Ledger(state_dir)
    book = Book(state_dir)
    policy = Policy(config, book)
    outbox = Outbox(bus, path=state_dir / "outbox")
    runners = [
        RouteRunner(
            route,
            policy=policy,
            book=book,
            ledger=ledger,
            outbox=outbox,
            instance=settings.instance,
            external_url=config.external_url,
        )
        for route in config.routes
    ]
    for r in runners:
        log.info("route %s: %s (%s)", r.name, r.sender.kind, _describe_match(r))
    dispatcher = Dispatcher(
        bus,
        durable=settings.durable,
        book=book,
        policy=policy,
        runners=runners,
        ack_wait_s=settings.ack_wait_s,
    )
    try:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(keep_running("the outbox", outbox.run))
            tasks.create_task(keep_running("the dispatcher", dispatcher.run))
            await asyncio.wait_for(dispatcher.ready.wait(), CONSUMER_READY_TIMEOUT_S)
            async with service_lifetime(bus, "notifier", node=settings.instance):
                try:
                    await idle_until_cancelled()
                finally:  # what it recorded last, while its sender still runs
                    await outbox.flush(2.0)
    finally:
        outbox.close()
        ledger.close()


def _describe_match(runner: RouteRunner) -> str:
    m = runner.route.match
    parts = [f"kinds {'+'.join(m.kinds)}", f"severity >= {m.severity.value}"]
    if m.clusters:
        parts.append("clusters " + ",".join(m.clusters))
    if m.groups:
        parts.append("groups " + ",".join(m.groups))
    if m.codes:
        parts.append("codes " + ",".join(m.codes))
    return "; ".join(parts)


SERVICE = ServiceSpec(name="notifier", load_settings=load, run=run)
