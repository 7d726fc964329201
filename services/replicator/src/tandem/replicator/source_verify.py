"""Verify & synchronize as the source runs it: at start, for a target that reports itself
out of sync, and on an operator's ``VerifyReplica`` (a mixin of ``SourceSide``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from nats.aio.msg import Msg

from tandem.events.bus import Bus
from tandem.events.catalog import SyncCompleted, SyncProgress, SyncStarted, VerifyReplica
from tandem.events.catalog.replication import (
    ReplicationStateChanged,
    SyncCompletedPayload,
    SyncProgressPayload,
    SyncStartedPayload,
)
from tandem.events.catalog.vocabulary import ReplicaState
from tandem.events.envelope import Command, CommandResult
from tandem.events.errors import DecodeError
from tandem.events.registry import decode_event
from tandem.events.transient import describe, is_transient
from tandem.replicator.capture import Capture
from tandem.replicator.manifest import Entry, SyncStats
from tandem.replicator.publisher import JournalPublisher
from tandem.replicator.sendqueue import SendQueue
from tandem.replicator.settings import ReplicatorSettings
from tandem.replicator.syncproto import TargetNotServingError, fetch_manifest, tell_end
from tandem.replicator.verify import Throttle, VerifyResult, verify_and_sync

log = logging.getLogger(__name__)

#: How long a verify the source starts by itself waits for the replica's manifest (one asked
#: for by an operator waits longer): a target whose side restarted never answers.
AUTO_VERIFY_WAIT_S = 30.0
#: How long a verify asked for before the capture is live waits for it (the capture waits
#: for the bus and the folder; one that cannot start raises its own alert).
CAPTURE_WAIT_S = 120.0


class SourceVerifying:
    """What verifying needs of the source side, which sets all of it up."""

    s: ReplicatorSettings
    bus: Bus
    epoch: int
    ready: asyncio.Event
    queue: SendQueue
    publisher: JournalPublisher
    capture: Capture
    _verifying: asyncio.Lock
    _matched_from: dict[str, float]
    _background: set[asyncio.Task[VerifyResult]]

    async def _publish(self, cls: Any, payload: Any) -> None:
        raise NotImplementedError

    def _from_thread(self, coro: Any) -> None:
        raise NotImplementedError

    async def _on_replica_state(self, msg: Msg) -> None:
        """A Passive that fell out of sync (a gap the stream cannot fill) gets verified."""
        try:
            event = decode_event(msg.data)
        except DecodeError:
            return  # the durable consumers dead-letter it; this is only a trigger
        if (
            isinstance(event, ReplicationStateChanged)
            and event.payload.state is ReplicaState.OUT_OF_SYNC
            and event.payload.target in self.s.peers
        ):
            reason = f"{event.payload.target} is out of sync: {event.payload.reason}"
            # Bounded like the start-time verify: a target whose side restarted meanwhile
            # never answers this fetch, and the next verify (its new report) waits behind it.
            verify = self.verify(
                event.payload.target,
                reason,
                fetch_timeout=AUTO_VERIFY_WAIT_S,
                unless_matched_after=time.monotonic(),
                in_flight_decides=True,
            )
            task = asyncio.get_running_loop().create_task(verify)
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def exclusive(self) -> AbstractContextManager[object]:
        factory: Callable[[], AbstractContextManager[object]] | None = getattr(
            self.capture, "exclusive", None
        )
        return factory() if factory is not None else contextlib.nullcontext()

    async def _on_command(self, command: Command) -> CommandResult:
        assert isinstance(command, VerifyReplica)
        targets = [command.payload.target] if command.payload.target else self.s.peers
        if not targets:
            return CommandResult(
                command_id=command.id,
                idempotency_key=command.idempotency_key,
                ok=False,
                reason="no target: set peers or name one",
            )
        results = [
            await self.verify(t, command.payload.reason, command.payload.max_passes)
            for t in targets
        ]
        ok = all(r.ok for r in results)
        return CommandResult(
            command_id=command.id,
            idempotency_key=command.idempotency_key,
            ok=ok,
            reason="; ".join(f"{t}: {r.reason}" for t, r in zip(targets, results, strict=True)),
            data={t: r.__dict__ for t, r in zip(targets, results, strict=True)},
        )

    async def verify_all(
        self, reason: str, pause_s: float = 5.0, max_pause_s: float = 60.0
    ) -> None:
        """Verify every peer, trying again (less and less often) until it succeeds: until
        then the orchestrator holds the peer unverified and moves no role onto it."""
        began = time.monotonic()
        for target in self.s.peers:
            attempt, pause = 0, pause_s
            while True:
                attempt += 1
                # A verify the target's own report started meanwhile (it read the manifest
                # after this began) answers this one: a second, redundant one only put the
                # target back into 'syncing', where it may not take over (PostgreSQL test:
                # the Active was SIGKILLed during it and the failover was refused).
                result = await self.verify(
                    target,
                    reason,
                    fetch_timeout=AUTO_VERIFY_WAIT_S,
                    unless_matched_after=began,
                    in_flight_decides=True,
                )
                if result.ok:
                    break
                log.warning(
                    "verify of %s (attempt %d) failed: %s; again in %.0fs",
                    target, attempt, result.reason, pause,
                )  # fmt: skip
                await asyncio.sleep(pause)
                pause = min(pause * 2, max_pause_s)

    async def verify(
        self,
        target: str,
        reason: str,
        max_passes: int = 3,
        fetch_timeout: float = 120.0,
        unless_matched_after: float | None = None,
        in_flight_decides: bool = False,
    ) -> VerifyResult:
        """``unless_matched_after`` (a ``time.monotonic()``): skip it when a verify whose
        replica manifest was asked for after that moment has ended ok meanwhile (a target
        that starts unverified reports it while the start-time verify is already running:
        a second verify behind it only doubled the time to a ready pair).
        ``in_flight_decides``: a pass whose differences are all writes in flight ends it
        (the verifies the source starts by itself); an operator's verify confirms with a
        further pass, so that the replica matches when it answers."""
        # Only a verify made while the capture is live counts: what is written after its
        # pass and before the capture would be on neither the journal nor the replica.
        try:
            await asyncio.wait_for(self.ready.wait(), CAPTURE_WAIT_S)
        except TimeoutError:
            why = f"the capture is not live after {CAPTURE_WAIT_S:.0f}s: verify later"
            return VerifyResult(False, 0, 0, 0, 0, why)
        async with self._verifying:
            matched = self._matched_from.get(target)
            if unless_matched_after is not None and matched is not None:
                if matched >= unless_matched_after:
                    why = "a verify that read its manifest after this report matched it"
                    log.info("verify of %s not needed (%s): %s", target, reason, why)
                    return VerifyResult(True, 0, 0, 0, 0, why)
            return await self._verify(target, reason, max_passes, fetch_timeout, in_flight_decides)

    async def _verify(
        self,
        target: str,
        reason: str,
        max_passes: int,
        fetch_timeout: float,
        in_flight_decides: bool = False,
    ) -> VerifyResult:
        s = self.s
        log.info("verify of %s started: %s", target, reason)
        await self._publish(SyncStarted, SyncStartedPayload(target=target, reason=reason))
        throttle = Throttle(1.0)

        def progress(stats: SyncStats, total: int) -> None:
            if throttle.ready():
                payload = SyncProgressPayload(
                    target=target,
                    files_checked=stats.checked,
                    files_total=total,
                    bytes_sent=stats.bytes_sent,
                )
                self._from_thread(self._publish(SyncProgress, payload))

        first_fetch: list[float] = []

        async def fetch() -> dict[str, Entry]:
            first_fetch.append(time.monotonic())
            upto = (self.epoch, self.queue.last_sealed_seq)
            return await fetch_manifest(self.bus, s.cluster, target, upto, timeout=fetch_timeout)

        async def settle() -> None:
            await self.publisher.drain(timeout=120)

        try:
            result = await verify_and_sync(
                self.capture.read_root(),
                fetch_replica=fetch,
                submit=self.queue.submit,
                settle=settle,
                exclusive=self.exclusive,
                max_passes=max_passes,
                on_progress=progress,
                exact_fixes=getattr(self.capture, "exclusive", None) is not None,
                in_flight_decides=in_flight_decides,
            )
        except TargetNotServingError as exc:  # not up yet: expected, said without a trace
            log.warning("verify of %s not done yet: %s", target, exc)
            result = VerifyResult(False, 0, 0, 0, 0, f"{type(exc).__name__}: {exc}")
        except Exception as exc:
            if is_transient(exc):  # the bus electing a leader, a reconnect: tried again
                log.warning("verify of %s interrupted: %s", target, describe(exc))
            else:
                log.exception("verify of %s failed", target)
            result = VerifyResult(False, 0, 0, 0, 0, f"{type(exc).__name__}: {exc}")
        told = False
        with contextlib.suppress(Exception):
            await tell_end(
                self.bus, s.cluster, target, result.ok, f"verify & synchronize: {result.reason}"
            )
            told = True
        await self._publish(
            SyncCompleted,
            SyncCompletedPayload(
                target=target,
                files_checked=result.files_checked,
                files_out_of_sync=result.files_out_of_sync,
                bytes_sent=result.bytes_sent,
                ok=result.ok,
                reason=result.reason,
            ),
        )
        if result.ok:
            if first_fetch and told:  # the target knows it is verified
                self._matched_from[target] = first_fetch[0]
            log.info("verify of %s done: %s", target, result.reason)
        return result
