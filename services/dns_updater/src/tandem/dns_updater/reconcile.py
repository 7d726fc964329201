"""The reconcile: each DR name is checked against its cluster's current Active, and moved
there when it points elsewhere (a move that failed, a record edited by hand).

- The Active is the role record in ``tandem_roles`` or the newest ``RoleChanged`` the
  cluster's follower handled, whichever has the larger epoch; a cluster with neither is
  not checked.
- What the name points at is asked of every authoritative (verify) server, without
  recursion. All answer exactly the Active's addresses: nothing is recorded. Otherwise the
  name is moved by the same signed update and verification as a role change's
  (``Mover.move``), and ``DnsRecordReconciled`` records it, with what was found before.
- A name that cannot be checked or moved raises ``dns.stale.<name>`` (once per failure, and
  at every operator's request); once the name is right, every DNS alert of the name that
  may be open is cleared (``AlertCleared``: the stale one, the follower's
  ``dns.update_failed`` and an agent's ``dns.update_missing``).
- When: at start, every ``[reconcile] interval_s``, and on a ``DnsReconcileRequested``
  (``tandem dns reconcile``), answered by one ``DnsReconcileCompleted`` naming every name
  checked and its outcome (its id derives from the request's: a redelivery records it once).
- A check holds the cluster's lock, as the follower's moves do: a newer role change waits
  for it and then moves the name itself; the Active is read inside the lock.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any, get_args

from nats.js.api import DeliverPolicy

from tandem.dns_updater.follower import AGENT_PROBLEMS, PUBLISH_TIMEOUT_S, ClusterFollower
from tandem.dns_updater.mover import MoveFailed
from tandem.dns_updater.update import ordered
from tandem.events.bus import Bus
from tandem.events.catalog import (
    AlertCleared,
    AlertRaised,
    DnsReconcileCompleted,
    DnsReconcileRequested,
    DnsRecordReconciled,
)
from tandem.events.catalog.alerts import AlertClearedPayload, AlertRaisedPayload
from tandem.events.catalog.dns import DnsProblem, dns_alert_code
from tandem.events.catalog.dns_reconcile import (
    DnsReconcileCompletedPayload,
    DnsRecordReconciledPayload,
    ReconciledName,
    ReconcileTrigger,
)
from tandem.events.catalog.vocabulary import Severity
from tandem.events.consumer import ConsumerOptions, DurableConsumer
from tandem.events.envelope import Event
from tandem.events.errors import TransientError
from tandem.events.roles import read_role
from tandem.events.subjects import ROLES_BUCKET, events_filter

log = logging.getLogger(__name__)

_ANSWERS = uuid.UUID("0b7f6c1e-5a43-4c1d-8f0e-9d2a7b3c5e61")
ROLE_READ_TIMEOUT_S = 5.0


def stale_code(name: str) -> str:
    return dns_alert_code("stale", name)


class ClusterReconcile:
    """The reconcile of one cluster's names, sharing its follower's lock and knowledge."""

    def __init__(self, bus: Bus, follower: ClusterFollower) -> None:
        self.bus = bus
        self.follower = follower
        self.cluster = follower.cluster
        #: Names whose dns.stale alert this process raised and did not clear yet.
        self.raised: set[str] = set()

    async def active(self) -> tuple[str, int] | None:
        """(Active node, epoch), or None when nothing names one yet."""
        best: tuple[str, int] | None = None
        try:
            kv = await asyncio.wait_for(self.bus.kv(ROLES_BUCKET), ROLE_READ_TIMEOUT_S)
            record, _ = await asyncio.wait_for(read_role(kv, self.cluster), ROLE_READ_TIMEOUT_S)
            if record is not None:
                best = (record.active, record.epoch)
        except Exception as exc:  # the bucket away or unreadable: what the follower knows
            log.warning("%s: the role record cannot be read: %s", self.cluster, exc)
        f = self.follower
        if f.last_epoch is not None and f.last_active is not None:
            if best is None or f.last_epoch > best[1]:
                best = (f.last_active, f.last_epoch)
        return best

    async def reconcile(
        self, trigger: ReconcileTrigger, cause: Event | None = None
    ) -> list[ReconciledName]:
        """Check (and repair) every name of the cluster; each one's outcome."""
        async with self.follower.lock:
            active = await self.active()
            if active is None:
                level = logging.DEBUG if trigger == "periodic" else logging.INFO
                log.log(level, "%s: no Active known yet: DR names not checked", self.cluster)
                reason = "no Active known yet (no role record, no RoleChanged)"
                return [
                    ReconciledName(
                        cluster=self.cluster, name=e.display_name, outcome="failed", reason=reason
                    )
                    for e in self.follower.entries
                ]
            node, epoch = active
            return [
                await self._check(index, node, epoch, trigger, cause)
                for index in range(len(self.follower.entries))
            ]

    async def _check(
        self, index: int, node: str, epoch: int, trigger: ReconcileTrigger, cause: Event | None
    ) -> ReconciledName:
        entry = self.follower.entries[index]
        name = entry.display_name
        mover = self.follower.mover

        def outcome(kind: Any, reason: str = "", addresses: list[str] | None = None) -> Any:
            return ReconciledName(
                cluster=self.cluster,
                name=name,
                outcome=kind,
                active_node=node,
                addresses=addresses or [],
                reason=reason,
            )

        addresses = entry.addresses.get(node)
        if addresses is None:
            reason = f"the Active {node} has no address for {name} in the configuration"
            await self._stale(name, node, epoch, reason, Severity.CRITICAL, trigger, cause)
            return outcome("failed", reason)
        expected = frozenset(ordered(addresses))
        found = await mover.look(entry)
        seen = "; ".join(answer.describe() for answer in found)
        if all(answer.addresses == expected for answer in found):
            log.debug("%s: %s points to the Active %s (%s)", self.cluster, name, node, seen)
            await self._right(name, node, epoch, cause)
            return outcome("ok", addresses=ordered(addresses))
        if all(answer.addresses is None for answer in found):
            reason = f"cannot check where {name} points: {seen}"
            await self._stale(name, node, epoch, reason, Severity.WARNING, trigger, cause)
            return outcome("failed", reason)
        log.warning(
            "%s: %s does not point to the Active %s (%s; expected [%s]): moving it (%s check)",
            self.cluster,
            name,
            node,
            seen,
            ", ".join(ordered(addresses)),
            trigger,
        )
        try:
            moved = await mover.move(entry, addresses)
        except MoveFailed as exc:
            reason = f"{name} does not point to the Active {node} ({seen}): {exc.reason}"
            await self._stale(name, node, epoch, reason, Severity.CRITICAL, trigger, cause)
            return outcome("failed", reason)
        payload = DnsRecordReconciledPayload(
            name=name,
            active_node=node,
            addresses=ordered(addresses),
            found=[answer.describe() for answer in found],
            trigger=trigger,
            attempts=max(moved.attempts, 1),
        )
        await self._publish(DnsRecordReconciled(**self._envelope(epoch), payload=payload), cause)
        log.info("%s: %s repaired: it points to %s again (%s)", self.cluster, name, node, seen)
        self.follower.suspect.add(name)  # whatever was open about it is resolved now
        await self._right(name, node, epoch, cause)
        return outcome("fixed", f"was {seen}", ordered(addresses))

    async def _right(self, name: str, node: str, epoch: int, cause: Event | None) -> None:
        """The name is right: clear its DNS alerts, when one may be open."""
        if name not in self.follower.suspect and name not in self.raised:
            return
        for problem in get_args(DnsProblem):
            payload = AlertClearedPayload(
                code=dns_alert_code(problem, name), reason=f"{name} points to the Active {node}"
            )
            await self._publish(AlertCleared(**self._envelope(epoch), payload=payload), cause)
        # The Active's agent may have raised one while it waited for the name to move.
        for problem in AGENT_PROBLEMS:
            payload = AlertClearedPayload(
                code=dns_alert_code(problem, name), reason=f"{name} points to the Active {node}"
            )
            envelope = self._envelope(epoch) | {"node": node}
            await self._publish(AlertCleared(**envelope, payload=payload), cause)
        self.follower.suspect.discard(name)
        self.raised.discard(name)

    async def _stale(
        self,
        name: str,
        node: str,
        epoch: int,
        reason: str,
        severity: Severity,
        trigger: ReconcileTrigger,
        cause: Event | None,
    ) -> None:
        log.error("%s: %s (%s check)", self.cluster, reason, trigger)
        if name in self.raised and trigger != "request":
            return  # raised already: not again at every period
        payload = AlertRaisedPayload(
            code=stale_code(name),
            severity=severity,
            message=reason,
            details={"name": name, "active_node": node, "trigger": trigger},
        )
        await self._publish(AlertRaised(**self._envelope(epoch), payload=payload), cause)
        self.raised.add(name)

    def _envelope(self, epoch: int) -> dict[str, Any]:
        return {"cluster": self.cluster, "node": self.follower.instance, "epoch": epoch}

    async def _publish(self, event: Event, cause: Event | None) -> None:
        if cause is not None:
            event = event.caused(cause)
        await self.bus.publish(event, timeout=PUBLISH_TIMEOUT_S)


class Reconciler:
    """Every cluster's reconcile: at start, periodically, and on request."""

    def __init__(
        self,
        bus: Bus,
        followers: list[ClusterFollower],
        *,
        instance: str,
        at_start: bool = True,
        interval_s: float = 60.0,
    ) -> None:
        self.bus = bus
        self.instance = instance
        self.at_start = at_start
        self.interval_s = interval_s
        self.clusters = {f.cluster: ClusterReconcile(bus, f) for f in followers}
        self._longest = max((f.longest_round_s() for f in followers), default=0.0)

    @property
    def durable(self) -> str:
        return f"{self.instance}-reconcile"

    def consumer(self) -> DurableConsumer:
        """The operators' requests (from the consumer's creation on)."""
        options = ConsumerOptions(
            durable=self.durable,
            filter_subject=events_filter(None, "DnsReconcileRequested"),
            batch=1,
            ack_wait_s=2 * len(self.clusters) * self._longest + 30,
            deliver_policy=DeliverPolicy.NEW,
        )
        return DurableConsumer(self.bus, options, self.handle)

    async def round(self, trigger: ReconcileTrigger) -> list[ReconciledName]:
        """Every cluster at once; a cluster whose check fails (the bus away) is logged."""
        results = await asyncio.gather(
            *(c.reconcile(trigger) for c in self.clusters.values()), return_exceptions=True
        )
        out: list[ReconciledName] = []
        for cluster, result in zip(self.clusters, results, strict=True):
            if isinstance(result, asyncio.CancelledError):
                raise result
            if isinstance(result, BaseException):
                log.warning("%s: the %s check did not finish: %s", cluster, trigger, result)
                continue
            out.extend(result)
        return out

    async def run_periodic(self) -> None:
        """The check at start, then every ``interval_s`` (never, with 0), until cancelled."""
        if self.at_start and self.clusters:
            await self.round("start")
        if self.interval_s <= 0 or not self.clusters:
            await asyncio.Event().wait()
        while True:
            await asyncio.sleep(self.interval_s)
            await self.round("periodic")

    async def handle(self, event: Event) -> None:
        if not isinstance(event, DnsReconcileRequested):
            raise ValueError(f"expected a DnsReconcileRequested, got {event.type}")
        wanted = event.payload.cluster
        log.info(
            "reconcile of %s requested by %s: %s",
            wanted or "every cluster",
            event.payload.requested_by,
            event.payload.reason,
        )
        names: list[ReconciledName] = []
        try:
            for cluster, reconcile in self.clusters.items():
                if wanted is None or cluster == wanted:
                    names.extend(await reconcile.reconcile("request", event))
        except Exception as exc:  # a publish that failed: the request comes back later
            raise TransientError(f"reconcile of {wanted or 'every cluster'}: {exc}") from exc
        if wanted is not None and wanted not in self.clusters:
            log.info("reconcile of %s: no DR name of that cluster is configured here", wanted)
        payload = DnsReconcileCompletedPayload(request_id=event.id, cluster=wanted, names=names)
        completed = DnsReconcileCompleted(
            cluster=event.cluster, node=self.instance, payload=payload
        ).caused(event)
        completed = completed.model_copy(
            update={"id": str(uuid.uuid5(_ANSWERS, f"{event.id}/{self.instance}"))}
        )
        try:
            await self.bus.publish(completed, timeout=PUBLISH_TIMEOUT_S)
        except Exception as exc:
            raise TransientError(f"could not record the reconcile's outcome: {exc}") from exc
