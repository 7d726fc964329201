"""The node's liveness lease in ``tandem_leases``, its node guard's deadline, and
self-fencing.

The arithmetic (``ttl`` = ``ttl_s``, ``m`` = ``fence_margin_s``, ``r`` = ``renew_every_s``;
every time is counted from the *start* of the last acknowledged renewal, on this machine's
clock, so a slow acknowledgement never makes the lease look newer than it is):

* a renewal is sent every ``r``, each on its own; each one waits for its acknowledgement for
  as long as it can still keep the node from fencing (until ``ttl - m`` after the last good
  one, and at least ``r``), so a slow KV acknowledgement is not a lost renewal, and it does
  not hold up the next one;
* the agent hides itself at ``ttl - m`` (``must_fence``);
* the node guard, a separate process, hides the node at ``ttl - m/2`` if the agent did not
  (frozen, killed, starved): ``m/2`` is the time it has to do so before the lease runs out;
* the orchestrator takes a node for gone only after ``ttl`` (and its failover timeout) of
  silence by its own clock, which starts later than ours, and its failover fences the old
  Active before exposing the new one.

So the node tolerates a stall of the bus (or of this machine) of up to ``ttl - m - r``
without a false fence. Renewals run in a thread of their own with their own bus connection
(``own_connection``): a busy event loop in the agent (replication, health checks) cannot
delay them. Fencing runs in the agent's loop; what it did is recorded (``NodeSelfFenced``)
through the outbox. A guard that fenced the node, or that died, is noticed here too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from tandem.agent.guard.link import GuardLink
from tandem.agent.guard.plan import boot_clock
from tandem.events.bus import Bus
from tandem.events.cancel import raise_if_cancelled
from tandem.events.catalog import NodeSelfFenced
from tandem.events.catalog.roles import NodeSelfFencedPayload
from tandem.events.catalog.vocabulary import Role
from tandem.events.envelope import Event
from tandem.events.nodeboard import NodeBoard
from tandem.events.subjects import LEASES_BUCKET, node_lease_key
from tandem.events.transient import describe

log = logging.getLogger(__name__)

Fence = Callable[[str], Awaitable[list[str]]]
#: How often the agent's loop looks at the lease, the guard and its reports.
WATCH_S = 0.05
_GUARD_RESTART_PAUSE_S = 1.0


class LeaseRecord(BaseModel):
    """The value of a node lease; readers judge expiry by their own clock from the revision."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    node: str
    ttl_s: float = Field(gt=0)
    renewed_at: float  # sender's wall clock, for people
    role: Role | None = None
    epoch: int = 0
    fenced: bool = False
    #: The node's failover settings, for the orchestrator (from the node config).
    failover_timeout_s: float | None = None
    failover_mode: str | None = None
    #: Wall clock: the node guard hides the node at this time unless renewed (for people).
    serve_until: float | None = None
    #: Where clients reach this node while it is Active (``PublicIdentityConfig.describe``).
    public: str | None = None


class LeaseKeeper:
    def __init__(
        self,
        bus: Bus,
        cluster: str,
        node: str,
        *,
        ttl_s: float,
        renew_every_s: float,
        fence_margin_s: float,
        board: NodeBoard,
        fence: Fence,
        emit: Callable[[Event], None],
        clock: Callable[[], float] = time.monotonic,
        failover_timeout_s: float | None = None,
        failover_mode: str | None = None,
        guard: GuardLink | None = None,
        own_connection: bool = False,
        public: str | None = None,
    ) -> None:
        self.bus = bus
        self.cluster = cluster
        self.node = node
        self.ttl_s = ttl_s
        self.renew_every_s = renew_every_s
        self.fence_margin_s = fence_margin_s
        self.board = board
        self.fence = fence
        self.emit = emit
        self.clock = clock
        self.failover_timeout_s = failover_timeout_s
        self.failover_mode = failover_mode
        self.guard = guard
        self.own_connection = own_connection
        self.public = public
        self.last_renewed: float | None = None
        #: ``last_renewed`` on the boot clock (the guard's), and on the wall clock.
        self._renewed_boot: float | None = None
        self._renewed_wall: float | None = None
        self.renewals = 0
        self._fence_pending = ""
        #: Why the last renewal failed ('' while they succeed): said once, not each time.
        self._failing = ""
        self._stop = threading.Event()
        #: This clock's time of the last fence (a renewal after it means the lease is back).
        self.fenced_clock = float("inf")

    @property
    def fence_after_s(self) -> float:
        return self.ttl_s - self.fence_margin_s

    @property
    def guard_after_s(self) -> float:
        return self.ttl_s - self.fence_margin_s / 2

    def must_fence(self, now: float) -> str:
        """The reason to fence now, or '' when there is none."""
        if self.board.role is not Role.ACTIVE or self.board.fenced:
            return ""
        if self.last_renewed is None:
            return ""  # never held a lease in this run: nothing to lose yet
        silent = now - self.last_renewed
        if silent < self.fence_after_s:
            return ""
        return (
            f"lease not renewed for {silent:.1f}s (lease {self.ttl_s:g}s, hide after "
            f"{self.fence_after_s:g}s): hiding before it runs out"
        )

    # --- the serving gate (the executor and the role watch ask before serving) -----------

    def held_since(self, since: float) -> bool:
        """A renewal that started after ``since`` (this clock) was acknowledged, and the
        lease is held now."""
        last = self.last_renewed
        return last is not None and last > since and self.refusal() == ""

    def refusal(self) -> str:
        """Why this node may not serve now, or ''."""
        if self.guard is not None and self.guard.exit_code() is not None:
            return f"{self.node} has no node guard running (it is being restarted)"
        last = self.last_renewed
        if last is None:
            return f"{self.node} does not hold its lease yet"
        silent = self.clock() - last
        if silent >= self.fence_after_s:
            return (
                f"{self.node} does not hold its lease (last renewal {silent:.1f}s ago, "
                f"lease {self.ttl_s:g}s)"
            )
        return ""

    def arm(self) -> None:
        """The node is about to serve: the guard hides it when the lease is not renewed."""
        self.board.guarded = True
        self._tell_guard()

    def disarm(self) -> None:
        """The node hid: nothing for the guard to do."""
        self.board.guarded = False
        self._tell_guard()

    def _serve_until_boot(self) -> float | None:
        if not self.board.guarded or self._renewed_boot is None:
            return None
        return self._renewed_boot + self.guard_after_s

    def _tell_guard(self) -> None:
        if self._renewed_wall is not None and self.board.guarded:
            self.board.serve_until = self._renewed_wall + self.guard_after_s
        else:
            self.board.serve_until = None
        if self.guard is not None:
            self.guard.send(self._serve_until_boot(), self.board.epoch)

    # --- renewing -------------------------------------------------------------------------

    def _record(self) -> bytes:
        return (
            LeaseRecord(
                node=self.node,
                ttl_s=self.ttl_s,
                renewed_at=time.time(),
                role=self.board.role,
                epoch=self.board.epoch,
                fenced=self.board.fenced,
                failover_timeout_s=self.failover_timeout_s,
                failover_mode=self.failover_mode,
                serve_until=self.board.serve_until,
                public=self.public,
            )
            .model_dump_json()
            .encode()
        )

    def _wait_for_ack_s(self, started: float) -> float:
        if self.last_renewed is None:
            return max(self.renew_every_s, self.fence_after_s)
        return max(self.renew_every_s, self.fence_after_s - (started - self.last_renewed))

    async def renew_forever(self, bus: Bus, on_fence: Callable[[str], None]) -> None:
        """Send a renewal every ``renew_every_s``, each in a task of its own: one whose
        request was lost (its connection's server killed under it) waits out its
        acknowledgement without holding up the next, which goes over the new connection."""
        key = node_lease_key(self.cluster, self.node)
        in_flight: set[asyncio.Task[None]] = set()
        most = math.ceil(self.fence_after_s / self.renew_every_s) + 1
        try:
            while not self._stop.is_set():
                reason = self.must_fence(self.clock())
                if reason:
                    on_fence(reason)  # before renewing: after a freeze, hide first
                started = self.clock()
                if len(in_flight) < most:
                    task = asyncio.create_task(self._renew_once(bus, key, started))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                await asyncio.sleep(max(0.0, self.renew_every_s - (self.clock() - started)))
        finally:
            for task in list(in_flight):
                task.cancel()

    async def _renew_once(self, bus: Bus, key: str, started: float) -> None:
        started_boot, started_wall = boot_clock(), time.time()
        try:
            wait_s = self._wait_for_ack_s(started)
            kv = await asyncio.wait_for(bus.kv(LEASES_BUCKET), wait_s)
            await asyncio.wait_for(kv.put(key, self._record()), wait_s)
        except Exception as exc:
            why = describe(exc) or type(exc).__name__
            if not self._failing:  # once until it renews again: not five times a second
                log.warning("%s: lease not renewed: %s", self.node, why)
            self._failing = why
            return
        self.renewals += 1
        if self._failing:
            log.info("%s: lease renewed again (after: %s)", self.node, self._failing)
            self._failing = ""
        # Judge by the start of the put: the lease may have been renewed any time after. An
        # earlier renewal acknowledged after a later one changes nothing.
        if self.last_renewed is not None and started <= self.last_renewed:
            return
        if self.must_fence(self.clock()) == "" and not self._fence_pending:
            self.last_renewed = started
            self._renewed_boot, self._renewed_wall = started_boot, started_wall
            self._tell_guard()

    def _renewal_thread(self) -> None:
        asyncio.run(self._renew_with_own_connection())

    async def _renew_with_own_connection(self) -> None:
        delay = 0.2
        while not self._stop.is_set():
            try:
                bus = await Bus.connect(self.bus.settings, name=f"{self.node}-lease")
                break
            except Exception as exc:
                log.warning("%s: lease connection not open yet: %s", self.node, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        else:
            return
        try:
            stopper = asyncio.create_task(asyncio.to_thread(self._stop.wait))
            renewing = asyncio.create_task(self.renew_forever(bus, self._request_fence))
            await asyncio.wait({stopper, renewing}, return_when=asyncio.FIRST_COMPLETED)
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await renewing
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(bus.nc.close(), 2)

    def _request_fence(self, reason: str) -> None:
        self._fence_pending = reason  # the agent's loop fences (``_watch``)

    # --- the agent's loop ---------------------------------------------------------------------

    async def run(self) -> None:
        if not self.own_connection:
            async with asyncio.TaskGroup() as parts:
                parts.create_task(self.renew_forever(self.bus, self._request_fence))
                parts.create_task(self._watch())
            return
        thread = threading.Thread(target=self._renewal_thread, name="lease", daemon=True)
        self._stop.clear()
        thread.start()
        try:
            await self._watch()
        finally:
            self._stop.set()
            await asyncio.to_thread(thread.join, 5)

    async def _watch(self) -> None:
        guard_down_since: float | None = None
        while True:
            raise_if_cancelled()  # a timed wait may have swallowed a stop
            if self.guard is not None:  # first: what the guard did goes into the event
                await self._take_guard_reports()
            pending = self._fence_pending
            reason = pending or self.must_fence(self.clock())
            if reason:
                await self._fence(reason)
            if pending and self._fence_pending == pending:
                self._fence_pending = ""
            if self.guard is not None:
                guard_down_since = await self._mind_guard(guard_down_since)
            await asyncio.sleep(WATCH_S)

    async def _take_guard_reports(self) -> None:
        assert self.guard is not None
        for report in await asyncio.to_thread(self.guard.take_reports):
            why = f"node guard: {report.get('reason', 'no reason given')}"
            if not self.board.fenced and self.board.role is Role.ACTIVE:
                await self._fence(why, guard_actions=list(report.get("actions", [])))
            else:
                self._emit_fenced(why, list(report.get("actions", [])), "guard", report)

    async def _mind_guard(self, down_since: float | None) -> float | None:
        assert self.guard is not None
        code = self.guard.exit_code()
        if code is None and not self.guard.broken:
            return None
        now = self.clock()
        if down_since is None:
            why = self.guard.broken or f"exit code {code}"
            log.error("%s: the node guard is gone (%s)", self.node, why)
            if self.board.guarded:
                await self._fence(
                    f"the node guard is gone ({why}): hiding, since nothing would hide a "
                    "frozen agent now"
                )
            down_since = now - _GUARD_RESTART_PAUSE_S
        if now - down_since < _GUARD_RESTART_PAUSE_S:
            return down_since
        try:
            if self.guard.exit_code() is None:  # alive but not reading: replace it
                self.guard.proc.kill()  # type: ignore[union-attr]
            await self.guard.start()
            self._tell_guard()
            return None
        except Exception as exc:
            log.error("%s: cannot restart the node guard: %s", self.node, exc)
            return now

    async def _fence(self, reason: str, guard_actions: list[str] | None = None) -> None:
        if self.board.fenced:
            return
        log.error("%s fences itself: %s", self.node, reason)
        self.board.fenced = True
        self.fenced_clock = self.clock()
        self.board.fenced_epoch = self.board.epoch
        self.board.fenced_reason = reason
        self.board.fenced_since = datetime.now(UTC)
        try:
            actions = await self.fence(reason)
        except Exception as exc:  # keep what was done; say what failed
            log.exception("fencing did not complete")
            actions = [f"fencing failed: {type(exc).__name__}: {exc}"]
        if guard_actions is not None:
            actions = [f"guard: {a}" for a in guard_actions] + actions
        self._emit_fenced(reason, actions, "guard" if guard_actions is not None else "agent")

    def _emit_fenced(
        self, reason: str, actions: list[str], by: str, report: dict[str, Any] | None = None
    ) -> None:
        fenced_at = self.board.fenced_since or datetime.now(UTC)
        late_s = None
        epoch = self.board.epoch
        if report is not None:
            if isinstance(report.get("epoch"), int) and report["epoch"] > 0:
                epoch = report["epoch"]  # a restarted agent reports an earlier run's fence
            with contextlib.suppress(KeyError, ValueError, TypeError):
                fenced_at = datetime.fromisoformat(report["fenced_at"])
            late = report.get("late_s")
            late_s = float(late) if isinstance(late, int | float) else None
        self.emit(
            NodeSelfFenced(
                cluster=self.cluster,
                node=self.node,
                epoch=epoch,
                payload=NodeSelfFencedPayload(
                    reason=reason, actions=actions, fenced_at=fenced_at, by=by, late_s=late_s
                ),
            )
        )
