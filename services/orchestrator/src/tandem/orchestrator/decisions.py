"""What the leader decides by itself, every cycle: failover when an Active is gone (automatic,
or a ``FailoverRecommended`` for an operator in managed mode), and automatic switchovers
asked by a node's rules or network checks. Each decision is logged with its reason, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from datetime import UTC, datetime

from tandem.events.cancel import raise_if_cancelled
from tandem.events.catalog import (
    AlertCleared,
    AlertRaised,
    FailoverRecommendationWithdrawn,
    FailoverRecommended,
    RoleChanged,
)
from tandem.events.catalog.alerts import AlertClearedPayload, AlertRaisedPayload
from tandem.events.catalog.operations import (
    FailoverRecommendationWithdrawnPayload,
    FailoverRecommendedPayload,
)
from tandem.events.catalog.roles import RoleChangedPayload
from tandem.events.catalog.vocabulary import Severity
from tandem.events.envelope import Event
from tandem.events.names import SYSTEM_CLUSTER
from tandem.events.transient import describe
from tandem.orchestrator.core import Orchestrator
from tandem.orchestrator.facade import ConflictError, NotFoundError
from tandem.orchestrator.publishing import LeadershipLost
from tandem.orchestrator.role_records import RoleRecords
from tandem.orchestrator.state_records import SwitchoverRequest
from tandem.orchestrator.supervise import SayOnce, supervise

log = logging.getLogger(__name__)

#: Raised when the Active is gone and no node can take over; cleared once one can, or the
#: Active is back.
IMPOSSIBLE = "failover.impossible"
_DURATION = re.compile(r"\b\d+(?:\.\d+)?s\b")


class Decisions:
    def __init__(self, orchestrator: Orchestrator) -> None:
        self.o = orchestrator
        self._said: dict[str, str] = {}  # what was last said per subject: say things once
        self._refused_requests: set[str] = set()
        self._roles_read_at = 0.0
        #: The role records as they change (followed while ``run`` runs).
        self.role_records: RoleRecords | None = None
        #: When this process first saw each Active report itself fenced (its monotonic clock).
        self._fenced_seen: dict[tuple[str, str], float] = {}

    async def run(self) -> None:
        self.role_records = records = RoleRecords(self.o.bus)
        watching = asyncio.create_task(supervise("the role records' watch", records.run))
        try:
            await self._decide_forever()
        finally:
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching

    async def _decide_forever(self) -> None:
        await self.o.state.caught_up.wait()
        failing = SayOnce(log, "decision cycle failed")
        while True:
            raise_if_cancelled()  # a timed wait may have swallowed a stop
            if self.o.is_leader():
                try:
                    for line in await self.cycle():
                        log.info("decision: %s", line)
                    failing.ok()
                except LeadershipLost as exc:
                    failing.failed(f"the leadership was lost meanwhile: {exc}")
                except Exception as exc:  # the bus away, most likely: said once, not a flood
                    failing.failed(describe(exc))
                    log.debug("decision cycle failed", exc_info=True)
            await asyncio.sleep(self.o.s.decide_every_s)

    def _once(self, subject: str, text: str) -> bool:
        # "silent for 3.1s" then "3.2s" is the same news: durations do not make it new.
        gist = _DURATION.sub("#s", text)
        if self._said.get(subject) == gist:
            return False
        self._said[subject] = gist
        return True

    async def _clear(self, cluster: str, code: str, reason: str) -> list[str]:
        """Clear the open ``code`` alerts of ``cluster`` (raised by this replica or another:
        each as raised), folded at once so that the next cycle does not clear them again."""
        said = []
        for alert in list(self.o.state.cluster(cluster).alerts.values()):
            if alert.code != code:
                continue
            event = AlertCleared(
                cluster=cluster,
                node=alert.node,
                epoch=self.o.state.cluster(cluster).epoch,
                payload=AlertClearedPayload(code=code, subject=alert.subject, reason=reason),
            )
            await self._emit(event)
            self.o.state.apply(event)
            said.append(f"{cluster}: alert {code} cleared: {reason}")
        return said

    async def _emit(self, event: Event) -> None:
        """A decision's event (an alert, a recommendation): queued in the outbox, which
        stores it when the bus allows; never lost on a failed publish."""
        await self.o.publisher.later(event)

    async def roles(self) -> list[str]:
        """Bring the record up to ``tandem_roles`` (the authority on roles): a cluster whose
        first Active claimed epoch 1 by itself gets its ``RoleChanged`` event now."""
        said: list[str] = []
        if self.role_records is None:
            return said  # not running (a test's cycle): nothing followed
        state = self.o.state
        known = state.clusters

        def epoch_of(name: str) -> int:
            return known[name].epoch if name in known else 0

        seen = self.o.liveness.nodes_by_cluster
        for name, record in self.role_records.newer_than(epoch_of):
            if name == SYSTEM_CLUSTER or (name not in known and name not in seen):
                continue  # a record of a cluster nobody runs (left by a removed one)
            rec = self.o.state.cluster(name)
            if self.o.state.running_saga(name) is not None:
                continue  # the saga publishes its own RoleChanged
            event = RoleChanged(
                cluster=name,
                node=self.o.s.instance,
                epoch=record.epoch,
                payload=RoleChangedPayload(
                    active_node=record.active,
                    previous_active=rec.active,
                    new_epoch=record.epoch,
                    reason=f"found in tandem_roles: {record.reason or 'no reason given'}",
                ),
            )
            # Stored before it is folded: the state never runs ahead of the stream.
            await self.o.publisher.stored(
                event, keep_going=self.o.is_leader, what=f"RoleChanged of {name}"
            )
            self.o.state.apply(event)
            said.append(f"{name}: {record.active} is Active at epoch {record.epoch} (role record)")
        return said

    async def cycle(self) -> list[str]:
        said: list[str] = []
        state = self.o.state
        loop = asyncio.get_running_loop()
        if loop.time() - self._roles_read_at >= 1.0:
            self._roles_read_at = loop.time()
            said += await self.roles()
        said += await self.o.expire_pauses()
        liveness, seen = self.o.liveness, self.o.liveness.seen
        # Each cluster's requests, gathered once: asking per cluster was clusters x requests.
        asked: dict[str, list[SwitchoverRequest]] = {}
        for req in list(state.requests.values()):
            if req.event_id not in self._refused_requests:
                asked.setdefault(req.cluster, []).append(req)
        # A cluster whose Active serves costs a few lookups: the cycle runs 10 times a
        # second over every cluster, so what is not needed is not done.
        for name, rec in list(state.clusters.items()):
            for node in rec.nodes:
                if (name, node) not in seen:
                    liveness.watch(name, node)
            active = rec.active
            if active is None:
                continue
            if (name, active) not in seen:
                liveness.watch(name, active)
            if state.running_saga(name) is not None:
                continue
            gone = liveness.gone(name, active) or self._stuck_fenced(name, active)
            if gone:
                said += await self._active_gone(name, active, gone)
                continue
            if self._said:
                self._said.pop(f"gone:{name}", None)  # back: its next loss is news again
            if rec.alerts:
                said += await self._clear(name, IMPOSSIBLE, f"{active} is back: it serves")
            if rec.pending_failover is not None:
                said += await self._withdraw_if_back(name, active)
            if name in asked:
                said += await self._requests(name, active, asked[name])
        return said

    def _stuck_fenced(self, cluster: str, active: str) -> str:
        """Why an Active that fenced itself but is alive counts as gone, or ''.

        Such a node unfences by itself once it holds its lease again; if it does not within
        the grace, nobody would serve: it is failed over like a silent one (the failover
        fences it first)."""
        beat = self.o.liveness.heartbeat(cluster, active)
        key = (cluster, active)
        if beat is None or not beat.fenced or not self.o.liveness.alive(cluster, active):
            self._fenced_seen.pop(key, None)
            return ""
        now = asyncio.get_running_loop().time()
        since = self._fenced_seen.setdefault(key, now)
        grace = self.o.s.fenced_grace_s
        if now - since < grace:
            return ""
        why = beat.fenced_reason or "no reason given"
        return (
            f"{active} fenced itself ({why}) and has not served again for {now - since:.1f}s "
            f"(grace {grace:g}s): nobody serves"
        )

    async def _active_gone(self, cluster: str, active: str, gone: str) -> list[str]:
        rec = self.o.state.cluster(cluster)
        try:
            target = self.o.choose_target(cluster, active, None)
        except (ConflictError, NotFoundError) as exc:
            text = f"{cluster}: {gone}; no failover: {exc}"
            if self._once(f"gone:{cluster}", text):
                alert = AlertRaised(
                    cluster=cluster,
                    node=self.o.s.instance,
                    epoch=rec.epoch,
                    payload=AlertRaisedPayload(
                        code=IMPOSSIBLE, severity=Severity.CRITICAL, message=text
                    ),
                )
                await self._emit(alert)
                self.o.state.apply(alert)  # folded now: its clear must find it (see _clear)
                return [text]
            return []
        said = await self._clear(cluster, IMPOSSIBLE, f"{target} can take over from {active}")
        paused = self.o.paused_why(cluster)
        if self.o.liveness.mode(cluster, active) == "managed" or paused:
            pending = rec.pending_failover
            if pending is not None and pending.failed_node == active:
                return said + await self._withdraw_if_unfit(cluster, active)
            why = f"{gone} ({paused}: no automatic failover)" if paused else gone
            await self._emit(
                FailoverRecommended(
                    cluster=cluster,
                    node=self.o.s.instance,
                    epoch=rec.epoch,
                    payload=FailoverRecommendedPayload(failed_node=active, to=target, reason=why),
                )
            )
            mode = "paused" if paused else "managed mode"
            return [*said, f"{cluster}: {gone}; failover to {target} recommended ({mode})"]
        async with self.o._starting:
            if self.o.state.running_saga(cluster) is not None or not self.o.is_leader():
                return said
            if self.o.paused_why(cluster):
                return said  # paused meanwhile: the next cycle recommends it
            saga = await self.o._failover(cluster, target, gone, operator=False)
        self._said.pop(f"gone:{cluster}", None)
        return [*said, f"{cluster}: {gone}; failover to {target} (saga {saga.id})"]

    async def _withdraw_if_back(self, cluster: str, active: str) -> list[str]:
        """A recommendation whose failed Active serves again is withdrawn: confirming it
        would fail over a healthy node."""
        pending = self.o.state.cluster(cluster).pending_failover
        if pending is None or pending.failed_node != active:
            return []
        if not self.o.liveness.alive(cluster, active):
            return []  # neither gone nor heard yet: wait
        why = f"{active} is back: its heartbeats and lease renewals arrive again"
        return await self._withdraw(cluster, pending.failed_node, pending.to, why)

    async def _withdraw_if_unfit(self, cluster: str, active: str) -> list[str]:
        """A recommendation whose target can no longer take over is withdrawn (a new one
        names a fit target, or the failover.impossible alert says why there is none)."""
        pending = self.o.state.cluster(cluster).pending_failover
        assert pending is not None
        try:
            self.o.choose_target(cluster, active, pending.to)
        except (ConflictError, NotFoundError) as exc:
            why = f"{pending.to} can no longer take over: {exc}"
            return await self._withdraw(cluster, pending.failed_node, pending.to, why)
        return []

    async def _withdraw(self, cluster: str, failed: str, to: str, why: str) -> list[str]:
        rec = self.o.state.cluster(cluster)
        event = FailoverRecommendationWithdrawn(
            cluster=cluster,
            node=self.o.s.instance,
            epoch=rec.epoch,
            payload=FailoverRecommendationWithdrawnPayload(failed_node=failed, to=to, reason=why),
        )
        await self._emit(event)
        # Folded now as well (folding it again from the stream changes nothing): the next
        # cycle must not withdraw it twice, nor may an operator confirm it meanwhile.
        self.o.state.apply(event)
        return [f"{cluster}: failover of {failed} to {to} no longer recommended: {why}"]

    async def _requests(
        self, cluster: str, active: str, asked: list[SwitchoverRequest]
    ) -> list[str]:
        said = []
        now = datetime.now(UTC)
        for req in asked:
            if req.event_id in self._refused_requests:
                continue
            age = (now - req.occurred_at).total_seconds()
            if age > self.o.s.request_max_age_s or req.node != active:
                self._refused_requests.add(req.event_id)
                continue  # stale, or asked by a node that no longer is the Active
            try:
                saga_id = await self.o.switchover(
                    cluster,
                    req.to,
                    f"{req.node} (automatic)",
                    req.reason,
                    automatic=True,
                    cause=req.event_id,
                )
                said.append(f"{cluster}: automatic switchover ({req.reason}): saga {saga_id}")
            except (ConflictError, NotFoundError) as exc:
                if not self.o.is_leader():
                    break  # not refused: asked again of whoever leads next (this one too)
                self._refused_requests.add(req.event_id)
                text = f"{cluster}: automatic switchover asked by {req.node} refused: {exc}"
                # One per asking node (subject): resolved by the next saga that completes.
                await self._emit(
                    AlertRaised(
                        cluster=cluster,
                        node=self.o.s.instance,
                        payload=AlertRaisedPayload(
                            code="switchover.refused",
                            severity=Severity.WARNING,
                            message=text,
                            subject=req.node,
                        ),
                    )
                )
                said.append(text)
        return said
