"""The replicator of one node: plays the source side while the node is Active and the target
side while it is Passive, as ``tandem_roles`` says.

The role record is the only authority for which side runs: the node follows it, and a step
command (``StartIntercepting``) can only wait for the switch, never force one. Before a
target becomes a source it applies everything the journal holds for the old epoch
(``catch_up``), so acknowledged writes of the old Active are in the new Active's data before
its applications start. ``StopIntercepting`` holds the node with no side running until the
role record changes or ``StartIntercepting`` comes. Each decision is logged with its reason.
Running the side it wants, and starting it again after a fault, is ``side_loop.py``'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from nats.js.errors import NotFoundError

from tandem.events.bus import Bus
from tandem.events.cancel import raise_if_cancelled
from tandem.events.envelope import Event
from tandem.events.nodeboard import NodeBoard
from tandem.events.roles import (
    RoleRecord,
    claim_first_role,
    first_role_hint,
    may_write_roles,
    read_role,
)
from tandem.events.subjects import JOURNAL_STREAM, ROLES_BUCKET, journal_subject
from tandem.events.transient import describe, is_transient, retry_transient
from tandem.replicator.batch import H_EPOCH, H_SEQ
from tandem.replicator.settings import ReplicatorSettings
from tandem.replicator.side_loop import SideLoop, SideName
from tandem.replicator.source import SourceSide, last_source_epoch
from tandem.replicator.target import TargetSide

log = logging.getLogger(__name__)


async def current_role(bus: Bus, settings: ReplicatorSettings, poll_s: float = 1.0) -> RoleRecord:
    kv = await retry_transient("opening the role bucket", lambda: bus.kv(ROLES_BUCKET))
    told = False
    while True:
        record, _ = await retry_transient(
            "reading the role record", lambda: read_role(kv, settings.cluster)
        )
        if record is not None:
            return record
        if settings.initial_role == "active" and not may_write_roles(bus.settings.user):
            if not told:
                log.warning("%s", first_role_hint(settings.cluster, settings.node))
                told = True
            await asyncio.sleep(poll_s)
            continue
        if settings.initial_role == "active":
            return await retry_transient(
                "claiming the first role",
                lambda: claim_first_role(kv, settings.cluster, settings.node, "first pairing"),
            )
        log.info("no role record for %s yet; waiting for the Active", settings.cluster)
        await asyncio.sleep(poll_s)


async def last_journaled(bus: Bus, cluster: str) -> tuple[int, int]:
    """(epoch, seq) of the newest batch in the journal, (0, 0) when it holds none."""
    try:
        msg = await bus.js.get_last_msg(JOURNAL_STREAM, journal_subject(cluster))
    except NotFoundError:
        return 0, 0
    h = msg.headers or {}
    return int(h.get(H_EPOCH, 0)), int(h.get(H_SEQ, 0))


class ReplicatorNode(SideLoop):
    def __init__(
        self,
        settings: ReplicatorSettings,
        bus: Bus,
        *,
        emit: Callable[[Event], None],
        board: NodeBoard | None = None,
        poll_s: float = 1.0,
        catch_up_alert_s: float = 60.0,
    ) -> None:
        self.s = settings
        self.bus = bus
        self.emit = emit
        self.board = board if board is not None else NodeBoard()
        self.poll_s = poll_s
        self.catch_up_alert_s = catch_up_alert_s
        self.record: RoleRecord | None = None
        self.side: SourceSide | TargetSide | None = None
        self.side_name: SideName = "none"
        self.side_epoch = 0
        self._want: tuple[SideName, int] = ("none", 0)
        #: StopIntercepting: no side until the record changes from this one.
        self._held_at: RoleRecord | None = None
        self._wake = asyncio.Event()
        #: Read the role record now rather than at the next poll (a step is waiting on it).
        self._poke = asyncio.Event()
        self._switched = asyncio.Condition()
        #: The reason of the last replicator.capture_failed alert ('' once capture is live).
        self._capture_alerted = ""

    # -- what the steps use -------------------------------------------------------------

    @property
    def epoch(self) -> int:
        return self.record.epoch if self.record is not None else 0

    async def drain(self, timeout: float) -> str:
        side = self.side
        if not isinstance(side, SourceSide):
            return f"{self.s.node} is not the source ({self.side_name}): nothing to drain"
        await asyncio.wait_for(side.ready.wait(), timeout)
        # What the application wrote before the drain must be in it: a capture that learns
        # of changes late (watch: notifications, then a coalescing delay) hands it over first.
        await asyncio.to_thread(side.capture.flush, timeout)
        await side.publisher.drain(timeout)
        stored = f"{side.epoch}:{side.publisher.stored_upto}"
        return f"send queue drained: the journal holds up to batch {stored}"

    async def catch_up(self, timeout: float) -> str:
        """Apply every batch the journal holds for this target's epoch (ApplyReceiveQueue)."""
        side = self.side
        if isinstance(side, SourceSide):
            return f"{self.s.node} is the source at epoch {side.epoch}: nothing to apply"
        if not isinstance(side, TargetSide):
            return f"{self.s.node} replicates nothing now ({self.side_name}): nothing to apply"
        give_up = asyncio.get_running_loop().time() + timeout
        # A NATS node lost or a stream leader being elected answers 503 for a few seconds:
        # that is a wait inside the step's own budget, not a failed step (chaos s045, run 7).
        epoch, seq = await retry_transient(
            "reading the journal's last batch",
            lambda: last_journaled(self.bus, self.s.cluster),
            deadline_s=timeout,
        )
        timeout = max(0.1, give_up - asyncio.get_running_loop().time())
        if epoch != self.side_epoch:
            # The newest batch is of another epoch: nothing was journaled in ours yet.
            epoch, seq = self.side_epoch, 0
        side, gap = await self._applied_by_the_target((epoch, seq), timeout)
        if gap:
            # The old Active died before storing a batch it had sent later ones after: the
            # journal's unbroken beginning is all there is to take over (later batches were
            # never acknowledged as stored). Said loudly: those writes are gone.
            reached = "{}:{}".format(*side.loop.applied_upto())
            lost = f"batches after {reached} up to {epoch}:{seq} are lost ({gap})"
            log.error(
                "%s takes over with the journal applied up to %s: %s", self.s.node, reached, lost
            )
            return f"receive queue applied up to batch {reached}; {lost}"
        return f"receive queue applied up to batch {epoch}:{seq}"

    async def _applied_by_the_target(
        self, upto: tuple[int, int], timeout: float
    ) -> tuple[TargetSide, str]:
        """Wait for ``upto`` on whichever target side runs now: a bus fault restarts the side,
        and the one waited on then never applies again (chaos run 8, s008: a failover's
        ApplyReceiveQueue waited 30 s, twice, on the side that had ended while the new one had
        applied everything)."""
        loop = asyncio.get_running_loop()
        give_up = loop.time() + timeout
        while True:
            side = self.side
            left = give_up - loop.time()
            if left <= 0:
                raise TimeoutError(f"batch {upto[0]}:{upto[1]} not applied within {timeout:g}s")
            if not isinstance(side, TargetSide):
                await asyncio.sleep(min(left, 0.1))  # between two runs of the side
                continue
            with contextlib.suppress(TimeoutError):
                gap = await side.loop.wait_applied(upto, min(left, 1.0), accept_gap=True)
                return side, gap

    async def wait_side(self, name: SideName, min_epoch: int, timeout: float) -> str:
        """Wait until side ``name`` runs at ``min_epoch`` or later (and, for a source, its
        capture has started)."""

        def there() -> bool:
            return self.side_name == name and self.side_epoch >= min_epoch

        async with asyncio.timeout(timeout):
            async with self._switched:
                await self._switched.wait_for(there)
            side = self.side
            if isinstance(side, SourceSide):
                await side.ready.wait()
        return f"{self.s.node} runs the {name} side at epoch {self.side_epoch}"

    async def hold(self, timeout: float) -> str:
        """Stop the side that runs (a source drains first) and run none until released."""
        # The record as the bus holds it now: a role change the follower has not polled yet
        # must not undo the hold a moment later.
        fresh = await self.read_record()
        if fresh is not None:
            self.record = fresh
        self._held_at = self.record
        self._set_want("none", self.epoch, "StopIntercepting")
        await self.wait_side("none", 0, timeout)
        return f"{self.s.node} stopped replicating (was told to stop intercepting)"

    @property
    def held(self) -> bool:
        """``StopIntercepting`` holds this node with no side running."""
        return self._held_at is not None

    def release(self) -> None:
        if self._held_at is not None and self.record is not None:
            self._held_at = None
            self._set_want(*self._side_for(self.record), "released")

    def poke(self) -> None:
        """Look at the role record at once (a saga step waits for the switch it brings)."""
        self._poke.set()

    async def read_record(self) -> RoleRecord | None:
        """The role record as the bus holds it now (the follower may not have polled yet)."""
        record, _ = await read_role(await self.bus.kv(ROLES_BUCKET), self.s.cluster)
        return record

    def depths(self) -> dict[str, float]:
        side = self.side
        return side.depths() if side is not None else {}

    # -- the loop -----------------------------------------------------------------------

    def _side_for(self, record: RoleRecord) -> tuple[SideName, int]:
        return ("source" if record.active == self.s.node else "target"), record.epoch

    def _set_want(self, name: SideName, epoch: int, why: str) -> None:
        if (name, epoch) != self._want:
            log.info("%s: want %s side at epoch %s (%s)", self.s.node, name, epoch, why)
            self._want = (name, epoch)
            self._wake.set()

    async def run(self) -> None:
        if self.s.protected_root is not None:
            # A previous run killed while it was the source left its mount behind: neither
            # side (nor the application) can use the folder until it is gone.
            from tandem.replicator.intercept_mounts import MountError, clear_dead_mount

            for folder in {self.s.protected_root, self.s.mountpoint or self.s.protected_root}:
                try:
                    await asyncio.to_thread(clear_dead_mount, folder)
                except MountError as exc:  # a live mount of another process: the
                    # source's capture says so (an alert) and tries again
                    log.warning("%s: %s", self.s.node, exc)
        self.record = await current_role(self.bus, self.s, self.poll_s)
        self._want = self._side_for(self.record)
        behind = await self._behind_at_start(self.record)
        async with asyncio.TaskGroup() as tasks:
            if behind:
                tasks.create_task(self._catch_up_then_source(self.record, behind))
            tasks.create_task(self._follow_roles())
            tasks.create_task(self._report_gauges())
            tasks.create_task(self._run_sides())

    async def _behind_at_start(self, record: RoleRecord) -> int:
        """The older epoch whose journal this node must apply before it is the source, or 0.

        An agent killed while Passive can come back to a record that made it Active in the
        meantime (a switchover's pivot while it was down). The old Active drained its send
        queue into the journal before the pivot: those batches are acknowledged writes this
        node has not applied. Starting the source now would serve without them, and verify
        would then delete them from the replica too. Its own batches (it was the source at
        that epoch) are nothing to apply."""
        if record.active != self.s.node or self.s.protected_root is None:
            return 0
        epoch, seq = await retry_transient(
            "reading the journal's last batch", lambda: last_journaled(self.bus, self.s.cluster)
        )
        mine = await asyncio.to_thread(last_source_epoch, self.s.state)
        if seq == 0 or epoch >= record.epoch or epoch == mine:
            return 0
        log.warning(
            "%s is Active at epoch %s by the record, but the journal ends with batch %s:%s of "
            "another node: applying it before it becomes the source",
            self.s.node,
            record.epoch,
            epoch,
            seq,
        )
        self._want = ("target", epoch)
        return epoch

    async def _catch_up_then_source(self, record: RoleRecord, epoch: int) -> None:
        await self.wait_side("target", epoch, timeout=3600)
        await self._catch_up_before_source(None)
        if self.record == record and self._held_at is None:
            self._set_want("source", record.epoch, "applied the journal of the previous epoch")

    async def _follow_roles(self) -> None:
        kv = await self.bus.kv(ROLES_BUCKET)
        while True:
            raise_if_cancelled()  # a timed wait may have swallowed a stop
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poke.wait(), self.poll_s)
            self._poke.clear()
            try:
                record, _ = await read_role(kv, self.s.cluster)
            except Exception as exc:  # the bus may be away: keep the current side
                log.debug("role record unreadable: %s", exc)
                continue
            if record is None or record == self.record:
                continue
            log.info(
                "role record: %s Active at epoch %s (%s)",
                record.active,
                record.epoch,
                record.reason,
            )
            previous, self.record = self.record, record
            if self._held_at is not None and record != self._held_at:
                self._held_at = None
            name, epoch = self._side_for(record)
            if name == "source" and self.side_name == "target":
                await self._catch_up_before_source(previous)
            if self._held_at is None:
                self._set_want(name, epoch, record.reason or "role record changed")

    async def _catch_up_before_source(self, previous: RoleRecord | None) -> None:
        """Apply what the old Active journaled before this node writes as the new one; keep
        waiting (with an alert each period) rather than start with acknowledged data missing."""
        while True:
            try:
                reason = await self.catch_up(self.catch_up_alert_s)
                log.info("before becoming Active: %s", reason)
                return
            except Exception as exc:
                if not isinstance(exc, TimeoutError) and not is_transient(exc):
                    raise
                if not isinstance(exc, TimeoutError):  # the bus is away: ask again soon
                    log.warning("catching up before becoming Active: %s", describe(exc))
                    await asyncio.sleep(1.0)
                    continue
                log.error(
                    "%s cannot become Active yet: the journal of epoch %s is not all applied: %s",
                    self.s.node,
                    previous.epoch if previous else "?",
                    exc,
                )

    async def _report_gauges(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                self.board.set_gauges(**self.depths())
            await asyncio.sleep(0.5)
