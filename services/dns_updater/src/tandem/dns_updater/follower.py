"""The role changes of one cluster, followed by a durable consumer: each moves the cluster's
DR names to the site addresses of the new Active.

- A ``RoleChanged`` with an epoch older than the last one handled for the cluster is ignored
  (acknowledged, nothing recorded). The same epoch again is applied again: the update replaces
  the records, so the result is the same.
- Each outcome is recorded as ``DnsUpdated`` (with ``AlertCleared`` for
  ``dns.update_failed.<name>`` and ``dns.update_missing.<name>``, the latter raised by an agent
  that gave up waiting) or ``DnsUpdateFailed`` (with ``AlertRaised``,
  ``dns.update_failed.<name>``). Their ids derive from the role
  change's id: a redelivered role change records nothing twice (the stream drops duplicates).
- A failed update is recorded and the consumer goes on; only an outcome that cannot be
  recorded (the bus is away) makes the role change come back later (``TransientError``).
- First start of a durable: the last role change of the cluster, then every new one.
- A move holds the cluster's ``lock``, which the reconcile (``reconcile.py``) holds too.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any, get_args

from nats.js.api import DeliverPolicy

from tandem.dns_updater.config import DnsUpdaterConfig, NameConfig
from tandem.dns_updater.mover import MoveFailed, Mover
from tandem.dns_updater.update import ordered
from tandem.events.bus import Bus
from tandem.events.catalog import (
    AlertCleared,
    AlertRaised,
    DnsUpdated,
    DnsUpdateFailed,
    RoleChanged,
)
from tandem.events.catalog.alerts import AlertClearedPayload, AlertRaisedPayload
from tandem.events.catalog.dns import (
    DnsProblem,
    DnsUpdatedPayload,
    DnsUpdateFailedPayload,
    dns_alert_code,
)
from tandem.events.catalog.vocabulary import Severity
from tandem.events.consumer import ConsumerOptions, DurableConsumer
from tandem.events.envelope import Event
from tandem.events.errors import TransientError
from tandem.events.subjects import events_filter

log = logging.getLogger(__name__)

_OUTCOMES = uuid.UUID("6f1d3c52-8a47-4d0e-9a57-2f6b1c9e4d10")
PUBLISH_TIMEOUT_S = 10.0


def outcome_id(cause: Event, kind: str, name: str) -> str:
    """The same id for the same outcome of the same role change, however often it is seen."""
    return str(uuid.uuid5(_OUTCOMES, f"{cause.id}/{kind}/{name}"))


#: What an agent raises about a name it waited for (``tandem.agent.identity.dns``).
AGENT_PROBLEMS: tuple[DnsProblem, ...] = ("update_missing", "update_failed")


def alert_code(entry: NameConfig) -> str:
    return dns_alert_code("update_failed", entry.display_name)


class ClusterFollower:
    def __init__(
        self,
        bus: Bus,
        cluster: str,
        entries: list[NameConfig],
        config: DnsUpdaterConfig,
        *,
        instance: str,
        mover: Mover | None = None,
    ) -> None:
        self.bus = bus
        self.cluster = cluster
        self.entries = entries
        self.config = config
        self.instance = instance
        self.mover = mover or Mover(config)
        #: The newest epoch handled; older role changes are ignored.
        self.last_epoch: int | None = None
        #: The Active of ``last_epoch``.
        self.last_active: str | None = None
        #: Held while a name of the cluster is moved, by this follower or the reconcile: a
        #: check never moves a name back after a newer role change moved it.
        self.lock = asyncio.Lock()
        #: Names that may have a DNS alert open (cleared by the reconcile once right).
        self.suspect: set[str] = {e.display_name for e in entries}

    @property
    def durable(self) -> str:
        return f"{self.instance}-{self.cluster}"

    def consumer(self) -> DurableConsumer:
        # One message at a time, and long enough an ack wait for the slowest move of every
        # name (twice: a reconcile may hold the lock), so that a message is never
        # redelivered while it is still being handled.
        ack_wait = 2 * self.longest_round_s() + 30
        options = ConsumerOptions(
            durable=self.durable,
            filter_subject=events_filter(self.cluster, "RoleChanged"),
            batch=1,
            ack_wait_s=ack_wait,
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
        )
        return DurableConsumer(self.bus, options, self.handle)

    def longest_round_s(self) -> float:
        """An upper bound of the time moving every name of the cluster takes."""
        return len(self.entries) * (self.config.longest_move_s() + PUBLISH_TIMEOUT_S)

    async def handle(self, event: Event) -> None:
        if not isinstance(event, RoleChanged) or event.cluster != self.cluster:
            raise ValueError(
                f"expected a RoleChanged of {self.cluster}, got {event.type} of {event.cluster}"
            )
        epoch = event.payload.new_epoch
        if self.last_epoch is not None and epoch < self.last_epoch:
            log.info(
                "%s: role change to %s at epoch %d ignored: epoch %d was handled already",
                self.cluster,
                event.payload.active_node,
                epoch,
                self.last_epoch,
            )
            return
        async with self.lock:
            self.last_epoch, self.last_active = epoch, event.payload.active_node
            for entry in self.entries:
                await self._move(entry, event)

    async def _move(self, entry: NameConfig, cause: RoleChanged) -> None:
        node = cause.payload.active_node
        name = entry.display_name
        addresses = entry.addresses.get(node)
        if addresses is None:
            known = ", ".join(sorted(entry.addresses))
            reason = (
                f"not updated: node {node} has no address for {name} in the configuration "
                f"(nodes with one: {known})"
            )
            await self._failed(entry, cause, 1, reason)
            return
        log.info(
            "%s: moving %s to %s (%s) for epoch %d",
            self.cluster,
            name,
            node,
            ", ".join(addresses),
            cause.payload.new_epoch,
        )
        try:
            moved = await self.mover.move(entry, addresses)
        except MoveFailed as exc:
            await self._failed(entry, cause, max(exc.attempts, 1), exc.reason)
            return
        payload = DnsUpdatedPayload(
            name=name,
            addresses=ordered(addresses),
            ttl=entry.ttl,
            verified_by=moved.verified_by,
            attempts=moved.attempts,
        )
        await self._record(DnsUpdated(**self._envelope(cause), payload=payload), cause, name)
        log.info("%s: %s now points to %s", self.cluster, name, ", ".join(payload.addresses))
        self.suspect.discard(name)
        # Cleared at every success, not only after a failure this process saw: the failure
        # may have been recorded before a restart.
        for problem in get_args(DnsProblem):
            code = dns_alert_code(problem, name)
            cleared = AlertClearedPayload(code=code, reason=f"{name} moved to {node}")
            event = AlertCleared(**self._envelope(cause), payload=cleared)
            await self._record(event, cause, f"{name}/{problem}")
        # Also the alerts of an agent that gave up waiting for this move (the new Active's,
        # or the previous one's from its own expose), each under the node that raised it.
        agents = sorted({n for n in (node, cause.payload.previous_active) if n})
        for agent in agents:
            for problem in AGENT_PROBLEMS:
                cleared = AlertClearedPayload(
                    code=dns_alert_code(problem, name), reason=f"{name} moved to {node}"
                )
                event = AlertCleared(**self._envelope(cause) | {"node": agent}, payload=cleared)
                await self._record(event, cause, f"{name}/{problem}/{agent}")

    async def _failed(
        self, entry: NameConfig, cause: RoleChanged, attempts: int, reason: str
    ) -> None:
        name, node = entry.display_name, cause.payload.active_node
        log.error("%s: %s was not moved to %s: %s", self.cluster, name, node, reason)
        self.suspect.add(name)
        failed = DnsUpdateFailedPayload(name=name, attempts=attempts, reason=reason)
        await self._record(DnsUpdateFailed(**self._envelope(cause), payload=failed), cause, name)
        alert = AlertRaisedPayload(
            code=alert_code(entry),
            severity=Severity.CRITICAL,
            message=f"{name} does not point to the Active ({node}): {reason}",
            details={"name": name, "active_node": node, "attempts": attempts},
        )
        await self._record(AlertRaised(**self._envelope(cause), payload=alert), cause, name)

    def _envelope(self, cause: RoleChanged) -> dict[str, Any]:
        return {"cluster": self.cluster, "node": self.instance, "epoch": cause.payload.new_epoch}

    async def _record(self, event: Event, cause: RoleChanged, name: str) -> None:
        """Publish an outcome of ``cause`` under an id derived from it."""
        event = event.caused(cause).model_copy(update={"id": outcome_id(cause, event.type, name)})
        try:
            await self.bus.publish(event, timeout=PUBLISH_TIMEOUT_S)
        except Exception as exc:
            raise TransientError(f"could not record {event.type} of {name}: {exc}") from exc
