"""The sampled Actives of the scale benchmark (bench/scale.py): real, acknowledged lease
renewals, in a process of its own, one connection per node (as the agent's lease thread has
its own), exactly as ``LeaseKeeper.renew_forever`` renews; each judged as ``must_fence``
judges: the node fences itself once no renewal that started within ``ttl - margin`` (1.1 s
by default) before now was acknowledged. The bulk generator (bench/scale_load.py) sends
these nodes' heartbeats and role reads, not their renewals.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from multiprocessing.connection import Connection
from typing import Any

from scale_load import FENCE_AFTER_S, GUARD_AFTER_S, LEASE, lease_template, num
from tandem.events.bus import Bus
from tandem.events.catalog.vocabulary import Role
from tandem.events.settings import load_bus_settings
from tandem.events.subjects import LEASES_BUCKET, node_lease_key

log = logging.getLogger(__name__)


class Renewer:
    """``LeaseKeeper.renew_forever`` of one Active on its own connection, judged as
    ``must_fence`` judges (from the start of the last acknowledged renewal)."""

    def __init__(self, bus: Bus, cluster: str, node: str) -> None:
        self.bus, self.cluster, self.node = bus, cluster, node
        self.template = lease_template(node, Role.ACTIVE)
        self.latencies: list[float] = []
        self.failures = 0
        self.fences = 0
        self.max_silence_s = 0.0
        self.last: float | None = None
        self._fenced = False

    def _silence(self, now: float) -> None:
        if self.last is None:
            return  # never held a lease in this run: nothing to lose yet
        silent = now - self.last
        self.max_silence_s = max(self.max_silence_s, silent)
        if silent >= FENCE_AFTER_S and not self._fenced:
            self._fenced = True
            self.fences += 1
            log.warning(
                "%s.%s would fence itself: lease not renewed for %.2fs",
                self.cluster,
                self.node,
                silent,
            )

    async def run(self) -> None:
        key = node_lease_key(self.cluster, self.node)
        r = LEASE.renew_every_s
        while True:
            started = time.monotonic()
            self._silence(started)
            wait_s = max(r, FENCE_AFTER_S - (started - self.last if self.last else 0.0))
            now = time.time()
            value = self.template.render(
                {"renewed_at": num(now), "serve_until": num(now + GUARD_AFTER_S)}
            )
            try:
                kv = await asyncio.wait_for(self.bus.kv(LEASES_BUCKET), wait_s)
                await asyncio.wait_for(kv.put(key, value), wait_s)
                acked = time.monotonic()
                self.latencies.append(acked - started)
                self._silence(acked)
                self.last, self._fenced = started, False
            except Exception as exc:
                self.failures += 1
                log.warning("%s.%s: lease not renewed: %r", self.cluster, self.node, exc)
            await asyncio.sleep(max(0.0, r - (time.monotonic() - started)))

    def stats(self) -> dict[str, Any]:
        self._silence(time.monotonic())
        return {
            "latencies": self.latencies,
            "failures": self.failures,
            "fences": self.fences,
            "max_silence_s": self.max_silence_s,
        }


def run_sampler(url: str, targets: list[str], conn: Connection) -> None:
    """Process entry: acknowledged renewals of ``targets`` (``cluster.node``) until ``quit``."""
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    asyncio.run(_sample(url, targets, conn))


async def _sample(url: str, targets: list[str], conn: Connection) -> None:
    settings = load_bus_settings(servers=url)
    renewers = []
    for target in targets:
        cluster, node = target.split(".")
        bus = await Bus.connect(settings, name=f"{node}-lease")
        renewers.append(Renewer(bus, cluster, node))
    tasks = [asyncio.create_task(r.run()) for r in renewers]
    conn.send(("ready", len(tasks)))
    try:
        while True:
            await asyncio.sleep(0.05)
            while conn.poll():
                command = conn.recv()
                if command[0] == "quit":
                    return
                if command[0] == "stats":
                    conn.send(("stats", [r.stats() for r in renewers]))
    finally:
        for task in tasks:
            task.cancel()
        for r in renewers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(r.bus.nc.close(), 5)
