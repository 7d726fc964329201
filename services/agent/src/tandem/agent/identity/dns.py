"""A DR public name: clients reach the Active through a DNS name that the dns_updater service
moves to the Active site's address.

The node's own site address is already configured on it; exposing means "the name now points
here". The dns_updater follows ``RoleChanged`` and records each move as ``DnsUpdated`` (or
``DnsUpdateFailed`` once it gives up), so ``expose`` waits, up to ``wait_s``, for the events
stream to say the name includes this node's address.

Which events count (no race with an update published before ``expose`` is called): the window
starts at the cluster's last ``RoleChanged`` naming this node Active, found by its stream
sequence (the orchestrator publishes it at the saga's pivot, before it sends ``Expose``; the
dns_updater reacts to it, so its answer is stored after it). Without such an event (first
pairing, or it aged out of the stream) the window starts ``lookback_s`` ago. An ephemeral pull
consumer reads ``DnsUpdated`` and ``DnsUpdateFailed`` of every cluster from there (the name is
the key: whichever cluster the dns_updater files them under) and the latest one for the name
decides: it includes the site address (confirmed), it is a failure (not confirmed), or neither
(keep waiting).

Not confirmed in time, or failed: an ``AlertRaised`` (``dns.update_missing.<name>`` or
``dns.update_failed.<name>``: the dns_updater's codes, cleared by it once the name moves),
then ``on_missing`` decides: ``continue`` exposes anyway and says the name is not confirmed,
``fail`` raises ``ControlError``. ``hide`` changes nothing on the
network (the dns_updater points the name at the new Active); the exposed flag is in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from tandem.agent.control.base import ControlError
from tandem.agent.identity.base import IdentityStatus
from tandem.events.bus import Bus
from tandem.events.cancel import raise_if_cancelled
from tandem.events.catalog.alerts import AlertRaised, AlertRaisedPayload
from tandem.events.catalog.dns import DnsProblem, DnsUpdated, DnsUpdateFailed, dns_alert_code
from tandem.events.catalog.roles import RoleChanged
from tandem.events.catalog.vocabulary import Severity
from tandem.events.envelope import Event
from tandem.events.errors import DecodeError
from tandem.events.ids import new_id
from tandem.events.names import check_name
from tandem.events.registry import decode_event
from tandem.events.subjects import EVENTS_STREAM, event_subject, events_filter

log = logging.getLogger(__name__)

OnMissing = Literal["continue", "fail"]
_REQUEST_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class _Window:
    """Where the events that answer this role change start."""

    start_seq: int | None
    start_time: datetime | None
    epoch: int
    describe: str


@dataclass(frozen=True)
class _Verdict:
    confirmed: bool
    reason: str
    code: str = ""


class DnsIdentity:
    def __init__(
        self,
        bus: Bus,
        cluster: str,
        node: str,
        dns_name: str,
        site_address: str,
        *,
        wait_s: float = 20.0,
        on_missing: OnMissing = "continue",
        lookback_s: float = 300.0,
        emit: Callable[[Event], None] | None = None,
    ) -> None:
        if on_missing not in ("continue", "fail"):
            raise ValueError(f"on_missing must be 'continue' or 'fail', not {on_missing!r}")
        self.bus = bus
        self.cluster = check_name(cluster, "cluster name")
        self.node = check_name(node, "node name")
        self.dns_name = dns_name
        self.site_address = str(ipaddress.ip_address(site_address))
        self.wait_s = wait_s
        self.on_missing = on_missing
        self.lookback_s = lookback_s
        #: Where alerts go (the agent's outbox); without it they are published on the bus.
        self._emit = emit
        self._key = _name_key(dns_name)
        self._exposed = False
        self._confirmed_for: _Window | None = None
        self._detail = "hidden"
        self._seen = ""  # the last word about the name seen while waiting
        self._generation = 0  # bumped by every hide: a wait in progress is then void
        self._lock = asyncio.Lock()

    async def status(self) -> IdentityStatus:
        address = self.site_address if self._exposed else None
        return IdentityStatus(exposed=self._exposed, address=address, detail=self._detail)

    async def expose(self) -> IdentityStatus:
        async with self._lock:
            window = await self._window()
            confirmed = self._confirmed_for
            if self._exposed and confirmed is not None and confirmed.start_seq == window.start_seq:
                # Confirmed for this very role change (or, without one, confirmed already).
                return IdentityStatus(
                    exposed=True, address=self.site_address, detail="already exposed"
                )
            generation = self._generation
            verdict = await self._wait_for_dns(window, generation)
            if self._generation != generation:
                raise ControlError(f"{self.dns_name}: hidden while waiting for its DNS update")
            if verdict.confirmed:
                self._confirmed_for = window
                return self._mark_exposed(verdict.reason)
            await self._alert(verdict, window)
            if self.on_missing == "fail":
                raise ControlError(verdict.reason)
            return self._mark_exposed(
                f"{self.dns_name} not confirmed ({verdict.reason}); exposed anyway "
                "(on_missing = continue)"
            )

    async def hide(self) -> IdentityStatus:
        # Without the lock: hiding (self-fencing) never waits behind an expose's DNS wait.
        self._generation += 1
        was = self._exposed
        self._exposed = False
        self._confirmed_for = None
        self._detail = "hidden (the dns_updater points the name at the Active)"
        return IdentityStatus(exposed=False, detail="hidden" if was else "already hidden")

    async def reset_on_start(self) -> IdentityStatus:
        await self.hide()
        return IdentityStatus(exposed=False, detail="hidden at start")

    def _mark_exposed(self, detail: str) -> IdentityStatus:
        self._exposed = True
        self._detail = detail
        log.info("%s exposed at %s: %s", self.dns_name, self.site_address, detail)
        return IdentityStatus(exposed=True, address=self.site_address, detail=detail)

    # -- where to look ----------------------------------------------------------------------

    async def _window(self) -> _Window:
        changed = await self._last_role_change()
        if changed is not None:
            seq, event = changed
            epoch = event.payload.new_epoch
            return _Window(seq, None, epoch, f"RoleChanged to epoch {epoch}")
        since = datetime.now(UTC) - timedelta(seconds=self.lookback_s)
        return _Window(None, since, 0, f"the last {self.lookback_s:g}s (no RoleChanged to us)")

    async def _last_role_change(self) -> tuple[int, RoleChanged] | None:
        """The stream sequence and event of the cluster's last RoleChanged, if it names us."""
        subject = event_subject(self.cluster, RoleChanged.type_key()[0])
        try:
            raw = await asyncio.wait_for(
                self.bus.js.get_last_msg(EVENTS_STREAM, subject), _REQUEST_TIMEOUT_S
            )
            event = decode_event(raw.data or b"")
        except NotFoundError:
            return None
        except (NatsError, TimeoutError, DecodeError) as exc:
            log.warning("cannot read the last RoleChanged of %s: %s", self.cluster, exc)
            return None
        if isinstance(event, RoleChanged) and event.payload.active_node == self.node and raw.seq:
            return raw.seq, event
        return None

    # -- waiting ------------------------------------------------------------------------------

    async def _wait_for_dns(self, window: _Window, generation: int) -> _Verdict:
        self._seen = ""
        try:
            async with asyncio.timeout(self.wait_s) as deadline:
                return await self._watch(window, generation)
        except TimeoutError as exc:
            if deadline.expired():
                missing = (
                    f"no DnsUpdated for {self.dns_name} naming {self.site_address} within "
                    f"{self.wait_s:g}s (looked from {window.describe}"
                    + (f"; last seen: {self._seen})" if self._seen else ")")
                )
                return _Verdict(False, missing, self._code("update_missing"))
            reason = f"could not read DNS events from the bus: {str(exc) or 'timed out'}"
            return _Verdict(False, reason, self._code("update_missing"))
        except NatsError as exc:
            reason = f"could not read DNS events from the bus: {exc}"
            return _Verdict(False, reason, self._code("update_missing"))

    async def _watch(self, window: _Window, generation: int) -> _Verdict:
        js = self.bus.js
        name = f"dnsid-{self.node}-{new_id()}"
        config = ConsumerConfig(
            name=name,
            ack_policy=AckPolicy.NONE,
            filter_subjects=[
                events_filter(None, DnsUpdated.type_key()[0]),
                events_filter(None, DnsUpdateFailed.type_key()[0]),
            ],
            # Removed by the server if this process dies before it deletes it.
            inactive_threshold=max(30.0, 2 * self.wait_s),
            mem_storage=True,
            num_replicas=1,
        )
        if window.start_seq is not None:
            config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
            config.opt_start_seq = window.start_seq
        else:
            config.deliver_policy = DeliverPolicy.BY_START_TIME
            config.opt_start_time = window.start_time
        await js.add_consumer(EVENTS_STREAM, config=config)
        try:
            sub = await js.pull_subscribe_bind(consumer=name, stream=EVENTS_STREAM)
            try:
                return await self._read(sub, generation)
            finally:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(js.delete_consumer(EVENTS_STREAM, name), 2.0)

    async def _read(self, sub: JetStreamContext.PullSubscription, generation: int) -> _Verdict:
        latest: _Verdict | None = None
        while self._generation == generation:
            raise_if_cancelled()  # 3.11's wait_for may have swallowed a cancel
            try:
                msgs = await sub.fetch(32, timeout=1.0)
            except (NatsTimeoutError, TimeoutError):
                continue
            for msg in msgs:
                try:
                    event = decode_event(msg.data)
                except DecodeError as exc:
                    log.debug("skipping an undecodable DNS event: %s", exc)
                    continue
                verdict = self._judge(event)
                if verdict is not None:
                    latest, self._seen = verdict, verdict.reason
                # Decide on the latest event for the name once caught up with the stream.
                if latest is not None and msg.metadata.num_pending == 0:
                    if latest.confirmed or latest.code:
                        return latest
        return _Verdict(False, "hidden while waiting")

    def _judge(self, event: Event) -> _Verdict | None:
        if isinstance(event, DnsUpdated) and _name_key(event.payload.name) == self._key:
            p = event.payload
            if any(_same_address(a, self.site_address) for a in p.addresses):
                by = ", ".join(p.verified_by) or "no resolver"
                where = f"{self.dns_name} points to {self.site_address}"
                return _Verdict(True, f"{where} (ttl {p.ttl}s, verified by {by})")
            log.info("%s now points to %s, not to %s", p.name, p.addresses, self.site_address)
            return _Verdict(False, f"{self.dns_name} points to {', '.join(p.addresses)}")
        if isinstance(event, DnsUpdateFailed) and _name_key(event.payload.name) == self._key:
            failed = event.payload
            reason = (
                f"the dns_updater could not update {self.dns_name} "
                f"after {failed.attempts} attempt(s): {failed.reason}"
            )
            return _Verdict(False, reason, self._code("update_failed"))
        return None

    # -- alerting -----------------------------------------------------------------------------

    def _code(self, problem: DnsProblem) -> str:
        return dns_alert_code(problem, self.dns_name)

    async def _alert(self, verdict: _Verdict, window: _Window) -> None:
        severity = Severity.CRITICAL if self.on_missing == "fail" else Severity.WARNING
        alert = AlertRaised(
            cluster=self.cluster,
            node=self.node,
            epoch=window.epoch,
            payload=AlertRaisedPayload(
                code=verdict.code,
                severity=severity,
                message=verdict.reason,
                details={
                    "name": self.dns_name,
                    "address": self.site_address,
                    "on_missing": self.on_missing,
                    "wait_s": self.wait_s,
                },
            ),
        )
        log.warning("%s: %s", verdict.code, verdict.reason)
        if self._emit is not None:
            self._emit(alert)
            return
        try:
            await self.bus.publish(alert, timeout=_REQUEST_TIMEOUT_S)
        except (NatsError, TimeoutError) as exc:
            log.error("could not publish the %s alert: %s", verdict.code, exc)


def _name_key(name: str) -> str:
    """DNS names compare without case and without the root's trailing dot."""
    return name.strip().rstrip(".").lower()


def _same_address(text: str, address: str) -> bool:
    try:
        return str(ipaddress.ip_address(text)) == address
    except ValueError:
        return text.strip() == address
