"""One leader among orchestrator replicas: a lease in ``tandem_leases`` (key
``orchestrator.leader``), taken and renewed by compare-and-set on the revision.

The holder renews every ``renew_every_s``. Another replica takes over when it has seen the
revision unchanged for ``ttl_s`` (by its own clock). The leader stops acting as soon as it
has not renewed for ``ttl_s - margin``, before anyone else may take over.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable

from nats.js.errors import KeyNotFoundError

from tandem.events.bus import Bus
from tandem.events.cancel import raise_if_cancelled
from tandem.events.errors import CasConflictError
from tandem.events.kv import compare_and_set
from tandem.events.subjects import LEASES_BUCKET

log = logging.getLogger(__name__)

LEADER_KEY = "orchestrator.leader"


class LeaderLease:
    def __init__(
        self,
        bus: Bus,
        instance: str,
        *,
        ttl_s: float = 3.0,
        renew_every_s: float = 0.5,
        on_elected: Callable[[], Awaitable[None]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bus = bus
        self.instance = instance
        self.ttl_s = ttl_s
        self.renew_every_s = renew_every_s
        self.on_elected = on_elected
        self.clock = clock
        self.renewed_at: float | None = None
        self.holder: str | None = None
        self._seen: tuple[int, float] | None = None  # (revision, when first seen)
        self._taking_up: asyncio.Task[None] | None = None
        #: Someone saw is_leader() false since the last election (a saga that stopped "for the
        #: next leader"), even if only inside one slow renewal: when the lease is held again,
        #: that is a new term, and the stopped sagas are resumed.
        self._lapsed = False

    def is_leader(self) -> bool:
        if self.renewed_at is None:
            return False
        holds = self.clock() - self.renewed_at < self.ttl_s - self.renew_every_s
        if not holds:
            self._lapsed = True
        return holds

    async def run(self) -> None:
        """Hold or take the lease for ever. Every time this replica becomes the leader (at
        first, or again after it lost the lease, e.g. while the bus was away) ``on_elected``
        runs: it resumes the sagas whose tasks stopped with the leadership."""
        try:
            await self._hold()
        finally:
            if self._taking_up is not None:
                self._taking_up.cancel()

    async def _hold(self) -> None:
        failing = ""
        while True:
            raise_if_cancelled()  # a timed wait may have swallowed a stop
            was = self.is_leader()
            try:
                await self.cycle()
                if failing:
                    log.info("leader lease reachable again")
                failing = ""
            except Exception as exc:  # the bus may be away: stop acting when the lease lapses
                why = str(exc).strip() or type(exc).__name__
                if why != failing:
                    log.warning("leader lease not renewed: %s", why)
                failing = why
            if self.is_leader() and (not was or self._lapsed):
                self._lapsed = False
                log.info("%s is the orchestrator leader", self.instance)
                if self._taking_up is None or self._taking_up.done():
                    # Its own task: the lease goes on being renewed while it catches up.
                    self._taking_up = asyncio.create_task(self._elected())
            elif was and not self.is_leader():
                log.warning("%s is no longer the leader (holder: %s)", self.instance, self.holder)
            await asyncio.sleep(self.renew_every_s)

    async def _elected(self) -> None:
        if self.on_elected is None:
            return
        try:
            await self.on_elected()
        except asyncio.CancelledError:
            raise
        except Exception:  # the lease goes on being renewed; the next election tries again
            log.exception("taking up the leadership failed")

    async def cycle(self) -> str:
        """One attempt to hold or take the lease; returns what happened."""
        kv = await self.bus.kv(LEASES_BUCKET)
        started = self.clock()
        value = json.dumps({"holder": self.instance, "ttl_s": self.ttl_s}).encode()
        try:
            entry = await asyncio.wait_for(kv.get(LEADER_KEY), self.renew_every_s * 2)
        except KeyNotFoundError:
            return await self._write(kv, value, None, started, "took the free lease")
        holder = _holder(entry.value)
        self.holder = holder
        revision = entry.revision or 0
        if holder == self.instance:
            return await self._write(kv, value, revision, started, "renewed")
        if self._seen is None or self._seen[0] != revision:
            self._seen = (revision, started)
            self.renewed_at = None
            return f"{holder} leads"
        if started - self._seen[1] < self.ttl_s:
            return f"{holder} leads"
        return await self._write(kv, value, revision, started, f"took over from {holder}")

    async def _write(
        self, kv: object, value: bytes, revision: int | None, started: float, what: str
    ) -> str:
        try:
            await asyncio.wait_for(
                compare_and_set(kv, LEADER_KEY, value, revision),  # type: ignore[arg-type]
                self.renew_every_s * 2,
            )
        except CasConflictError:
            self.renewed_at = None
            return "lost the race for the lease"
        self.renewed_at, self.holder = started, self.instance
        return what

    async def resign(self) -> None:
        """Give the lease up at a clean stop, so another replica need not wait for it."""
        if not self.is_leader():
            return
        try:
            kv = await self.bus.kv(LEASES_BUCKET)
            await asyncio.wait_for(kv.delete(LEADER_KEY), 2)
        except Exception as exc:
            log.debug("could not resign: %s", exc)
        self.renewed_at = None


def _holder(value: bytes | None) -> str | None:
    try:
        data = json.loads(value or b"")
    except ValueError:
        return None
    return data.get("holder") if isinstance(data, dict) else None
