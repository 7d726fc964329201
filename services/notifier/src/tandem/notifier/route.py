"""One route's deliveries: decide, send with retries, record, and watch the route's health.

Each (event, route) ends in the ledger as ``delivered``, ``failed`` (every attempt failed:
``NotificationFailed``) or ``suppressed`` (held back, with why); a delivery also records
``NotificationDelivered``. A route that gives up ``failing_after`` notifications in a row
raises ``notifier.route_failing`` (subject: the route), which the other routes deliver; while
it is open the route tries each notification once (no retries: it would hold up its
cluster); its first delivery after that clears the alert.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from tandem.events.catalog import AlertCleared, AlertRaised
from tandem.events.catalog.alerts import AlertClearedPayload, AlertRaisedPayload
from tandem.events.catalog.notifications import (
    NotificationDelivered,
    NotificationDeliveredPayload,
    NotificationFailed,
    NotificationFailedPayload,
)
from tandem.events.catalog.vocabulary import Severity
from tandem.events.envelope import Event
from tandem.events.names import SYSTEM_CLUSTER
from tandem.events.outbox import Outbox
from tandem.notifier.book import Before, Book, now_utc
from tandem.notifier.channels import Context, DeliveryError, Sent, sender_for
from tandem.notifier.config import Route
from tandem.notifier.ledger import Ledger
from tandem.notifier.notification import Notification
from tandem.notifier.policy import ROUTE_FAILING, Policy

log = logging.getLogger(__name__)

_OUTCOMES = uuid.UUID("2b7f0c1e-5d7a-4f43-9d0e-8c1a6e3b9f52")


def outcome_id(event_id: str, route: str, kind: str) -> str:
    return str(uuid.uuid5(_OUTCOMES, f"{event_id}/{route}/{kind}"))


class RouteRunner:
    def __init__(
        self,
        route: Route,
        *,
        policy: Policy,
        book: Book,
        ledger: Ledger,
        outbox: Outbox,
        instance: str,
        external_url: str,
    ) -> None:
        self.route = route
        self.sender = sender_for(route.channel)
        self.policy = policy
        self.book = book
        self.ledger = ledger
        self.outbox = outbox
        self.instance = instance
        self.external_url = external_url
        self.given_up_in_a_row = 0

    @property
    def name(self) -> str:
        return self.route.name

    async def deliver(
        self, n: Notification, before: Before | None, *, flapped: bool = False
    ) -> None:
        """Handle ``n`` on this route once; returns when the ledger has its outcome.
        ``flapped``: its clear came within ``group_wait_s`` (neither is sent)."""
        if self.ledger.outcome(n.event.id, self.name) is not None:
            return  # done before a restart
        now = now_utc()
        why = self.policy.held_back(self.route, n, before, now)
        if why is None and flapped:
            why = f"cleared within group_wait_s ({self.route.group_wait_s:g}): flapping"
        if why is not None:
            log.info("%s: %s %s of %s held back: %s", self.name, n.code, n.status, n.cluster, why)
            await self.ledger.record(n.event.id, self.name, "suppressed", why)
            return
        ctx = Context(self.name, self.external_url, self.policy.take_held(self.route, n.cluster))
        attempts = 1 if self.name in self.book.failing_routes else 1 + self.route.retries
        delay = self.route.backoff_s
        error = DeliveryError("not tried")
        for attempt in range(1, attempts + 1):
            try:
                sent = await self.sender.send(n, ctx)
            except DeliveryError as exc:
                error = exc
                log.warning(
                    "%s: %s of %s, attempt %d/%d failed: %s",
                    self.name, n.code, n.cluster, attempt, attempts, exc.reason,
                )  # fmt: skip
                if attempt < attempts:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, self.route.max_backoff_s)
                continue
            await self._delivered(n, sent, attempt)
            return
        await self._given_up(n, error, attempts)

    async def _delivered(self, n: Notification, sent: Sent, attempts: int) -> None:
        await self.ledger.record(n.event.id, self.name, "delivered", sent.detail)
        if n.status == "firing" and n.kind == "alert":
            self.book.sent(n.fingerprint, self.name, now_utc())
        log.info("%s: %s %s of %s delivered: %s", self.name, n.code, n.status, n.cluster,
                 sent.detail)  # fmt: skip
        payload = NotificationDeliveredPayload(
            **self._common(n, attempts, sent.exit_code), detail=sent.detail[:500]
        )
        self._emit(NotificationDelivered(**self._envelope(n, "delivered"), payload=payload), n)
        self.given_up_in_a_row = 0
        if self.name in self.book.failing_routes:
            self.book.failing_routes.discard(self.name)
            self._route_alert(cleared=True, reason=f"delivered again: {sent.detail}")

    async def _given_up(self, n: Notification, error: DeliveryError, attempts: int) -> None:
        await self.ledger.record(n.event.id, self.name, "failed", error.reason)
        log.error("%s: %s %s of %s given up after %d attempts: %s",
                  self.name, n.code, n.status, n.cluster, attempts, error.reason)  # fmt: skip
        payload = NotificationFailedPayload(
            **self._common(n, attempts, error.exit_code), reason=error.reason[:500]
        )
        self._emit(NotificationFailed(**self._envelope(n, "failed"), payload=payload), n)
        self.given_up_in_a_row += 1
        failing = self.given_up_in_a_row >= self.route.failing_after
        if failing and self.name not in self.book.failing_routes:
            self.book.failing_routes.add(self.name)
            self._route_alert(cleared=False, reason=error.reason)

    def _common(self, n: Notification, attempts: int, exit_code: int | None) -> dict[str, Any]:
        return {
            "route": self.name,
            "channel": self.sender.kind,
            "event_id": n.event.id,
            "event_type": n.event.type,
            "stream_seq": n.seq,
            "status": n.status,
            "fingerprint": n.fingerprint if n.kind == "alert" else "",
            "attempts": attempts,
            "exit_code": exit_code,
        }

    def _envelope(self, n: Notification, kind: str) -> dict[str, Any]:
        return {
            "id": outcome_id(n.event.id, self.name, kind),
            "cluster": n.cluster,
            "node": self.instance,
            "epoch": n.event.epoch,
        }

    def _emit(self, event: Event, cause: Notification) -> None:
        self.outbox.put(event.caused(cause.event))

    def _route_alert(self, *, cleared: bool, reason: str) -> None:
        envelope = {"cluster": SYSTEM_CLUSTER, "node": self.instance}
        event: Event
        if cleared:
            log.info("route %s works again: %s cleared", self.name, ROUTE_FAILING)
            payload = AlertClearedPayload(code=ROUTE_FAILING, reason=reason, subject=self.name)
            event = AlertCleared(**envelope, payload=payload)
        else:
            kind = self.sender.kind
            log.error("route %s keeps failing: raising %s", self.name, ROUTE_FAILING)
            alert = AlertRaisedPayload(
                code=ROUTE_FAILING,
                severity=Severity.CRITICAL,
                message=f"route {self.name} ({kind}) cannot deliver: {reason}"[:500],
                details={"route": self.name, "channel": kind, "in_a_row": self.given_up_in_a_row},
                subject=self.name,
            )
            event = AlertRaised(**envelope, payload=alert)
        self.outbox.put(event)
