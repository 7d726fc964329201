"""The alert lifecycle in the orchestrator's fold (``ClusterState.apply`` calls these).

An alert is known by its fingerprint (code + cluster + node + subject): ``AlertRaised`` makes
it ``firing`` (raised again: the same alert, ``count`` one more, its message and severity the
latest), ``AlertAcknowledged`` makes it ``acknowledged`` (it still fires: its condition
holds), ``AlertCleared`` ends it (``cleared``, kept among the cluster's last ``MAX_CLEARED``
cleared ones). A raise after its clear starts a new episode of the same fingerprint.

Silences (``SilenceCreated`` until its ``ends_at`` or ``SilenceRemoved``) are kept beside the
alerts; they change nothing of what fires (the notifier reads them to stay quiet), and the
views say which alerts they mute.
"""

from __future__ import annotations

import logging
from datetime import datetime

from tandem.events.catalog.alerts import (
    AlertAcknowledged,
    AlertCleared,
    AlertRaised,
    SilenceCreated,
    SilenceRemoved,
)
from tandem.orchestrator.state_records import AlertRecord, ClusterRecord, SilenceRecord

log = logging.getLogger(__name__)

#: Cleared alerts kept per cluster (the oldest clear goes first).
MAX_CLEARED = 500
#: Ended silences (expired or removed) kept, beside every silence still in force.
MAX_ENDED_SILENCES = 100

ALERT_EVENTS = (AlertRaised, AlertCleared, AlertAcknowledged)
SILENCE_EVENTS = (SilenceCreated, SilenceRemoved)


def fold_alert(c: ClusterRecord, event: AlertRaised | AlertCleared | AlertAcknowledged) -> None:
    if isinstance(event, AlertRaised):
        _raised(c, event)
    elif isinstance(event, AlertCleared):
        _cleared(c, event)
    else:
        alert = c.alerts.get(event.payload.fingerprint)
        if alert is None or event.id in alert.seen:
            return  # cleared meanwhile (the ack came late), or folded already
        alert.seen.append(event.id)
        alert.state = "acknowledged"
        alert.acknowledged_by = event.payload.by
        alert.acknowledged_at = event.occurred_at
        alert.ack_comment = event.payload.comment


def _raised(c: ClusterRecord, event: AlertRaised) -> None:
    p = event.payload
    fingerprint = event.fingerprint
    if _folded_before(c, fingerprint, event.id):
        return
    alert = c.alerts.get(fingerprint)
    if alert is not None:
        alert.seen.append(event.id)
        alert.count += 1
        alert.message, alert.severity, alert.details = p.message, str(p.severity), dict(p.details)
        if alert.last_raised_at is None or event.occurred_at > alert.last_raised_at:
            alert.last_raised_at = event.occurred_at
        return
    before = c.cleared.pop(fingerprint, None)  # raised again after its clear: a new episode
    alert = AlertRecord(
        code=p.code,
        message=p.message,
        raised_at=event.occurred_at,
        node=event.node,
        fingerprint=fingerprint,
        cluster=event.cluster,
        subject=p.subject,
        severity=str(p.severity),
        details=dict(p.details),
        last_raised_at=event.occurred_at,
        event_id=event.id,
        causation_id=event.causation_id,
    )
    if before is not None:
        alert.seen.extend(before.seen)  # the last episode's events, should they come again
    alert.seen.append(event.id)
    c.alerts[fingerprint] = alert


def _cleared(c: ClusterRecord, event: AlertCleared) -> None:
    p = event.payload
    if _folded_before(c, event.fingerprint, event.id):
        return
    alert = c.alerts.get(event.fingerprint)
    if alert is not None:
        end_alert(c, alert, event.occurred_at, p.reason, event.id)
        return
    if event.node in c.nodes:
        return  # a node clears only its own (one cleared already, or never raised)
    # A central service (orchestrator, dns_updater) clearing a code it did not raise, as
    # streams recorded before alerts had fingerprints hold (those cleared a code for the
    # whole cluster): every open alert of that code and subject ends.
    for other in [a for a in c.alerts.values() if (a.code, a.subject) == (p.code, p.subject)]:
        end_alert(c, other, event.occurred_at, p.reason, event.id)


def _folded_before(c: ClusterRecord, fingerprint: str, event_id: str) -> bool:
    """The event is folded already: one the leader folded at once (its raise, then its
    clear) that the stream delivers afterwards must not open the alert again."""
    for alert in (c.alerts.get(fingerprint), c.cleared.get(fingerprint)):
        if alert is not None and event_id in alert.seen:
            return True
    return False


def end_alert(
    c: ClusterRecord, alert: AlertRecord, at: datetime, reason: str, event_id: str = ""
) -> None:
    """``alert`` is cleared: out of the open ones, into the last cleared ones."""
    if event_id:
        alert.seen.append(event_id)
    c.alerts.pop(alert.fingerprint, None)
    alert.state, alert.cleared_at, alert.cleared_reason = "cleared", at, reason
    c.cleared.pop(alert.fingerprint, None)
    c.cleared[alert.fingerprint] = alert
    while len(c.cleared) > MAX_CLEARED:
        c.cleared.popitem(last=False)


def fold_silence(
    silences: dict[str, SilenceRecord], event: SilenceCreated | SilenceRemoved
) -> None:
    if isinstance(event, SilenceRemoved):
        silence = silences.get(event.payload.silence_id)
        if silence is not None and silence.removed_at is None:
            silence.removed_at, silence.removed_by = event.occurred_at, event.payload.by
        return
    p = event.payload
    if p.silence_id in silences:
        return  # folded already (the leader folds its own at once)
    silences[p.silence_id] = SilenceRecord(
        silence_id=p.silence_id,
        cluster=event.cluster,
        matchers=dict(p.matchers),
        starts_at=p.starts_at,
        ends_at=p.ends_at,
        by=p.by,
        comment=p.comment,
        created_at=event.occurred_at,
    )
    _prune(silences, event.occurred_at)


def _prune(silences: dict[str, SilenceRecord], now: datetime) -> None:
    """Keep every silence in force and the last ``MAX_ENDED_SILENCES`` ended ones."""
    ended = sorted(
        (s for s in silences.values() if s.ended(now)),
        key=lambda s: s.removed_at or s.ends_at,
    )
    for silence in ended[: max(0, len(ended) - MAX_ENDED_SILENCES)]:
        del silences[silence.silence_id]
