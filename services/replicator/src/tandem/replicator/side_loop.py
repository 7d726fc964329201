"""Running the side a replicator node wants, for ``ReplicatorNode`` (a mixin): one side at a
time (source, target or none), swapped when the wanted one changes; a side a bus fault ended
(a leader election, a reconnect) or whose capture failed is started again in place, with
backoff, and a failed capture is a ``replicator.capture_failed`` alert until it is live.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from typing import Literal

from tandem.events.bus import Bus
from tandem.events.cancel import cancel_and_wait, raise_if_cancelled
from tandem.events.catalog import AlertCleared, AlertRaised
from tandem.events.catalog.alerts import AlertClearedPayload, AlertRaisedPayload
from tandem.events.catalog.vocabulary import Severity
from tandem.events.envelope import Event
from tandem.events.nodeboard import NodeBoard
from tandem.events.transient import Backoff, describe, is_bus_fault
from tandem.replicator.settings import ReplicatorSettings
from tandem.replicator.source import CaptureFailed, SourceSide
from tandem.replicator.target import TargetSide

# The node's logger: these lines are node.py's, as they were before this module split off.
log = logging.getLogger("tandem.replicator.node")

SideName = Literal["source", "target", "none"]


class SideLoop:
    """The side that runs and its restarts (a mixin: it uses what ``ReplicatorNode`` sets)."""

    s: ReplicatorSettings
    bus: Bus
    emit: Callable[[Event], None]
    board: NodeBoard
    side: SourceSide | TargetSide | None
    side_name: SideName
    side_epoch: int
    _want: tuple[SideName, int]
    _wake: asyncio.Event
    _switched: asyncio.Condition
    _capture_alerted: str

    async def _run_sides(self) -> None:
        backoff = Backoff(first_s=0.5, max_s=10.0)
        while True:
            raise_if_cancelled()  # a timed wait (_pause_or_change) may have swallowed a stop
            name, epoch = self._want
            self._wake.clear()
            if name != "source" and self._capture_alerted:  # no capture is wanted any more
                self._capture_cleared(f"{self.s.node} is no longer a source (it is {name})", epoch)
            side: SourceSide | TargetSide | None = None
            if name == "source":
                side = SourceSide(self.s, self.bus, epoch, self.emit)
            elif name == "target":
                side = TargetSide(self.s, self.bus, functools.partial(int, epoch), self.emit)
            log.info("%s is %s at epoch %s", self.s.node, _describe(name), epoch)
            task = asyncio.create_task(side.run()) if side is not None else None
            self.board.source_ready_epoch = 0
            if isinstance(side, SourceSide):
                ready = asyncio.create_task(self._tell_source_ready(side, epoch))
            async with self._switched:
                self.side, self.side_name, self.side_epoch = side, name, epoch
                self.board.set_gauges(replicating_as_source=1.0 if name == "source" else 0.0)
                self._switched.notify_all()
            try:
                await self._until_change(task)
            except BusFaultEndedSide as ended:
                # The bus came and went under the side (a leader election, a reconnect):
                # run it again from the start, as a restarted agent would, but in place.
                log.warning("%s side ended by a bus fault (%s); starting it again", name, ended)
                await self._pause_or_change(backoff)
                continue
            except CaptureFailed as failed:
                # The applications stay stopped (they start only once the capture is live:
                # agent/apps.py); the reason is an alert, and the capture is tried again.
                self._capture_failed(str(failed), epoch)
                await self._pause_or_change(backoff)
                continue
            finally:
                self.board.source_ready_epoch = 0
                if isinstance(side, SourceSide):
                    ready.cancel()
                if task is not None:
                    # An error that ended the side was raised (or handled) above already;
                    # a side that swallowed its cancellation is cancelled again until it ends
                    # (after 30 s: longer than a source's stop, its drain of 10 s included).
                    what = f"the {name} side at epoch {epoch}"
                    await cancel_and_wait(task, what, every_s=30.0, log=log)
            backoff.reset()

    async def _tell_source_ready(self, side: SourceSide, epoch: int) -> None:
        await side.ready.wait()
        self.board.source_ready_epoch = epoch
        if self._capture_alerted:
            said = f"the capture of {self.s.protected_root} is live at epoch {epoch}"
            self._capture_cleared(said, epoch)

    def _capture_cleared(self, said: str, epoch: int) -> None:
        log.info("%s: %s", self.s.node, said)
        self._capture_alerted = ""
        self.emit(
            AlertCleared(
                cluster=self.s.cluster,
                node=self.s.node,
                epoch=epoch,
                payload=AlertClearedPayload(code="replicator.capture_failed", reason=said),
            )
        )

    def _capture_failed(self, reason: str, epoch: int) -> None:
        """Alert once per distinct reason (a retry every few seconds is not news)."""
        if reason == self._capture_alerted:
            log.debug("%s", reason)
            return
        self._capture_alerted = reason
        why = f"{reason}; the applications stay stopped until it does (tried again)"
        log.error("%s: %s", self.s.node, why)
        self.emit(
            AlertRaised(
                cluster=self.s.cluster,
                node=self.s.node,
                epoch=epoch,
                payload=AlertRaisedPayload(
                    code="replicator.capture_failed", severity=Severity.CRITICAL, message=why
                ),
            )
        )

    async def _pause_or_change(self, backoff: Backoff) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), backoff.next_s)
        backoff.next_s = min(backoff.next_s * 2, backoff.max_s)

    async def _until_change(self, task: asyncio.Task[None] | None) -> None:
        waits: set[asyncio.Future[object]] = {asyncio.ensure_future(self._wake.wait())}
        if task is not None:
            waits.add(task)  # type: ignore[arg-type]
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                if w is not task:
                    w.cancel()
        if task is not None and task in done:
            exc = _bus_fault_in(task)
            if exc is not None:
                raise BusFaultEndedSide(describe(exc)) from exc
            task.result()
            raise RuntimeError("replication side ended by itself")


class BusFaultEndedSide(Exception):
    """A replication side stopped because a bus call failed for a passing reason."""


def _bus_fault_in(task: asyncio.Task[None]) -> BaseException | None:
    """The transient bus error that ended ``task`` (also inside a task group), or None."""
    if task.cancelled():
        return None
    exc = task.exception()
    return exc if is_bus_fault(exc) else None


def _describe(name: SideName) -> str:
    return {"source": "Active: source", "target": "Passive: target", "none": "not replicating"}[
        name
    ]
