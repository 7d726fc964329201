"""Alerts and silences for operators (issue 19): what fires, acknowledge one, silence some.
A mixin of ``Orchestrator``; the fold is ``alert_fold.py``, the views ``alert_views.py``.

``list_alerts(state="firing")`` is every alert whose condition still holds, acknowledged ones
included (an acknowledgement does not end an alert: each row's ``state`` says which it is);
``acknowledged`` only those an operator acknowledged, ``cleared`` the last cleared ones.

A silence of one cluster (its ``cluster`` matcher names one) is filed under that cluster, so
that it is ordered with that cluster's alerts; any other under the system cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from tandem.events.catalog.alerts import (
    AlertAcknowledged,
    AlertAcknowledgedPayload,
    SilenceCreated,
    SilenceCreatedPayload,
    SilenceRemoved,
    SilenceRemovedPayload,
)
from tandem.events.envelope import Event
from tandem.events.ids import new_id
from tandem.events.names import SYSTEM_CLUSTER
from tandem.orchestrator.alert_views import AlertDetail, SilenceView, alert_detail, silence_view
from tandem.orchestrator.facade import ConflictError, NotFoundError
from tandem.orchestrator.publishing import Publisher, lost_is_conflict
from tandem.orchestrator.settings import OrchestratorSettings
from tandem.orchestrator.state import ClusterState
from tandem.orchestrator.state_records import AlertRecord

log = logging.getLogger(__name__)

AlertFilter = Literal["firing", "acknowledged", "cleared"]


def _when(at: datetime | None) -> str:
    return at.isoformat(timespec="seconds") if at is not None else "?"


class AlertActions:
    """List and acknowledge alerts; create, list and remove silences (a mixin: it reads
    what ``Orchestrator`` sets)."""

    s: OrchestratorSettings
    state: ClusterState
    publisher: Publisher
    _starting: asyncio.Lock

    if TYPE_CHECKING:  # provided by Orchestrator and OrchestratorViews

        def _known(self, cluster: str) -> bool: ...
        def _require_leader(self) -> None: ...
        def is_leader(self) -> bool: ...

    # -- reading ---------------------------------------------------------------------------

    def list_alerts(self, state: AlertFilter, cluster: str | None, limit: int) -> list[AlertDetail]:
        """Newest first (by their last raise; cleared ones by their clear)."""
        if cluster is not None:
            rec = self.state.clusters.get(cluster)
            if not self._known(cluster) and (rec is None or not (rec.alerts or rec.cleared)):
                raise NotFoundError(f"no cluster {cluster!r}")
        now = datetime.now(UTC)
        found: list[AlertRecord] = []
        for name, rec in list(self.state.clusters.items()):
            if cluster is not None and name != cluster:
                continue
            if state == "cleared":
                found += rec.cleared.values()
            else:
                found += [a for a in rec.alerts.values() if state == "firing" or a.state == state]
        if state == "cleared":
            found.sort(key=lambda a: a.cleared_at or a.raised_at, reverse=True)
        else:
            found.sort(key=lambda a: a.last_raised_at or a.raised_at, reverse=True)
        silences = list(self.state.silences.values())
        return [alert_detail(a, silences, now) for a in found[:limit]]

    def alert(self, fingerprint: str) -> AlertDetail:
        return alert_detail(
            self._find(fingerprint), self.state.silences.values(), datetime.now(UTC)
        )

    def list_silences(self, include_ended: bool) -> list[SilenceView]:
        """In force (and pending) ones, newest first; with ``include_ended`` the ended ones
        the fold still keeps too."""
        now = datetime.now(UTC)
        open_ = [a for rec in list(self.state.clusters.values()) for a in rec.alerts.values()]
        chosen = [s for s in self.state.silences.values() if include_ended or not s.ended(now)]
        chosen.sort(key=lambda s: s.created_at, reverse=True)
        return [silence_view(s, open_, now) for s in chosen]

    def _find(self, fingerprint: str) -> AlertRecord:
        for rec in list(self.state.clusters.values()):
            alert = rec.alerts.get(fingerprint) or rec.cleared.get(fingerprint)
            if alert is not None:
                return alert
        raise NotFoundError(f"no alert {fingerprint!r} (firing, or among the last cleared)")

    def audit_cluster(self, arguments: dict[str, object]) -> str | None:
        """The cluster an audited alert or silence request is about, if one: the alert's
        (``fingerprint``), the silence's (``silence_id``) or its ``cluster`` matcher."""
        fingerprint, silence_id = arguments.get("fingerprint"), arguments.get("silence_id")
        if isinstance(fingerprint, str):
            with contextlib.suppress(NotFoundError):
                return self._find(fingerprint).cluster
        if isinstance(silence_id, str) and silence_id in self.state.silences:
            return self.state.silences[silence_id].cluster
        matchers = arguments.get("matchers")
        if isinstance(matchers, dict) and isinstance(matchers.get("cluster"), str):
            return str(matchers["cluster"])
        return None

    # -- changing --------------------------------------------------------------------------

    async def _record_alert_event(self, event: Event, what: str) -> None:
        await self.publisher.stored(event, keep_going=self.is_leader, what=what)
        self.state.apply(event)  # the answer (and the next request) sees it

    async def acknowledge_alert(self, fingerprint: str, actor: str, comment: str) -> AlertDetail:
        async with self._starting, lost_is_conflict():
            self._require_leader()
            alert = self._find(fingerprint)
            if alert.state == "cleared":
                raise ConflictError(
                    f"alert {fingerprint} ({alert.code} on {alert.cluster}/{alert.node}) was "
                    f"cleared at {_when(alert.cleared_at)}: {alert.cleared_reason}; nothing to "
                    "acknowledge"
                )
            if alert.state == "acknowledged":
                raise ConflictError(
                    f"alert {fingerprint} was already acknowledged by {alert.acknowledged_by} "
                    f"at {_when(alert.acknowledged_at)}"
                )
            event = AlertAcknowledged(
                cluster=alert.cluster,
                node=self.s.instance,
                epoch=self.state.cluster(alert.cluster).epoch,
                causation_id=alert.event_id or None,  # the raise it answers
                payload=AlertAcknowledgedPayload(
                    fingerprint=fingerprint, by=actor, comment=comment
                ),
            )
            await self._record_alert_event(
                event, f"AlertAcknowledged {alert.code} of {alert.cluster}"
            )
            log.info(
                "alert %s (%s on %s) acknowledged by %s",
                fingerprint,
                alert.code,
                alert.cluster,
                actor,
            )
            return self.alert(fingerprint)

    async def create_silence(
        self, matchers: dict[str, str], ends_at: datetime, actor: str, comment: str
    ) -> SilenceView:
        async with self._starting, lost_is_conflict():
            self._require_leader()
            now = datetime.now(UTC)
            if ends_at <= now:
                raise ConflictError(
                    f"the silence would end before it starts ({ends_at.isoformat()})"
                )
            target = matchers.get("cluster", "*")
            silence_id = new_id()
            event = SilenceCreated(
                cluster=SYSTEM_CLUSTER if target == "*" else target,
                node=self.s.instance,
                epoch=self._epoch(target),
                payload=SilenceCreatedPayload(
                    silence_id=silence_id,
                    matchers=matchers,
                    starts_at=now,
                    ends_at=ends_at,
                    by=actor,
                    comment=comment,
                ),
            )
            await self._record_alert_event(event, f"SilenceCreated {silence_id}")
            log.info(
                "silence %s of %s by %s until %s: %s", silence_id, matchers, actor, ends_at, comment
            )
            return self._silence(silence_id)

    async def remove_silence(self, silence_id: str, actor: str) -> SilenceView:
        async with self._starting, lost_is_conflict():
            self._require_leader()
            silence = self.state.silences.get(silence_id)
            if silence is None:
                raise NotFoundError(f"no silence {silence_id!r}")
            if silence.removed_at is not None:
                raise ConflictError(
                    f"silence {silence_id} was removed by {silence.removed_by} at "
                    f"{_when(silence.removed_at)}"
                )
            if silence.ends_at <= datetime.now(UTC):
                raise ConflictError(f"silence {silence_id} expired at {_when(silence.ends_at)}")
            cluster = silence.cluster
            event = SilenceRemoved(
                cluster=cluster,
                node=self.s.instance,
                epoch=self._epoch(cluster),
                payload=SilenceRemovedPayload(silence_id=silence_id, by=actor),
            )
            await self._record_alert_event(event, f"SilenceRemoved {silence_id}")
            log.info("silence %s removed by %s", silence_id, actor)
            return self._silence(silence_id)

    def _epoch(self, cluster: str) -> int:
        rec = self.state.clusters.get(cluster)  # one not seen yet is not made a record
        return rec.epoch if rec is not None else 0

    def _silence(self, silence_id: str) -> SilenceView:
        now = datetime.now(UTC)
        open_ = [a for rec in list(self.state.clusters.values()) for a in rec.alerts.values()]
        return silence_view(self.state.silences[silence_id], open_, now)
