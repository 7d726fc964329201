"""What the notifier knows: the alerts it has seen (firing or not, acknowledged, on which
routes their firing was sent and when) and the silences, folded from the events in stream
order and kept in ``state.json`` (written whole, fsynced, renamed) before the ack.

Folding the same event twice (a message delivered again after a restart) changes nothing:
each alert remembers the last event folded into it and what it looked like before, so a
decision taken again after a restart is the decision taken the first time.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from tandem.events.catalog import (
    AlertAcknowledged,
    AlertCleared,
    AlertRaised,
    SilenceCreated,
    SilenceRemoved,
)
from tandem.events.catalog.alerts import silence_matches
from tandem.events.envelope import Event

log = logging.getLogger(__name__)


@dataclass
class Before:
    """An alert as it was just before an event was folded into it."""

    firing: bool = False
    acked: bool = False
    since: str | None = None
    message: str = ""
    #: Route -> when its firing notification was last sent.
    sent: dict[str, str] = field(default_factory=dict)


@dataclass
class AlertEntry:
    firing: bool = False
    acked: bool = False
    since: str | None = None
    message: str = ""
    sent: dict[str, str] = field(default_factory=dict)
    last_event: str = ""
    before: Before = field(default_factory=Before)

    def snapshot(self) -> Before:
        return Before(self.firing, self.acked, self.since, self.message, dict(self.sent))


@dataclass
class Silence:
    matchers: dict[str, str]
    starts_at: str
    ends_at: str
    by: str = ""

    def active(self, now: datetime) -> bool:
        return datetime.fromisoformat(self.starts_at) <= now < datetime.fromisoformat(self.ends_at)


class Book:
    def __init__(self, folder: Path | None) -> None:
        self.path = folder / "state.json" if folder is not None else None
        self._saving = asyncio.Lock()
        self.alerts: dict[str, AlertEntry] = {}
        self.silences: dict[str, Silence] = {}
        #: Routes whose ``notifier.route_failing`` alert is open.
        self.failing_routes: set[str] = set()
        #: Per cluster, the stream sequence of the last event handled whole: an event at or
        #: below it, delivered again (replayed from the ack floor after a restart), is skipped.
        self.done_seq: dict[str, int] = {}
        self._load()

    # --- folding -----------------------------------------------------------------------

    def fold(self, event: Event) -> Before | None:
        """Fold ``event``; for an alert event, how its alert was before it (the same answer
        when the same event is folded again)."""
        if isinstance(event, SilenceCreated):
            p = event.payload
            self.silences[p.silence_id] = Silence(
                dict(p.matchers), p.starts_at.isoformat(), p.ends_at.isoformat(), p.by
            )
            return None
        if isinstance(event, SilenceRemoved):
            self.silences.pop(event.payload.silence_id, None)
            return None
        if isinstance(event, AlertAcknowledged):
            # It acknowledges the firing under way when it was made (not a later one, when
            # it is folded again after a restart).
            entry = self.alerts.get(event.payload.fingerprint)
            if entry is not None and entry.firing and entry.since is not None:
                if datetime.fromisoformat(entry.since) <= event.occurred_at:
                    entry.acked = True
            return None
        if not isinstance(event, AlertRaised | AlertCleared):
            return None
        entry = self.alerts.setdefault(event.fingerprint, AlertEntry())
        if entry.last_event == event.id:
            return entry.before
        before = entry.snapshot()
        entry.last_event, entry.before = event.id, before
        if isinstance(event, AlertRaised):
            if not entry.firing:
                entry.since = event.occurred_at.isoformat()
                entry.acked = False
                entry.sent = {}
            entry.firing = True
            entry.message = event.payload.message
        else:
            entry.firing = False
        return before

    def sent(self, fingerprint: str, route: str, at: datetime) -> None:
        entry = self.alerts.get(fingerprint)
        if entry is not None:
            entry.sent[route] = at.isoformat()

    # --- silences ------------------------------------------------------------------------

    def silenced_by(self, labels: dict[str, str], now: datetime) -> str | None:
        """The id of an active silence that matches ``labels``; expired ones are forgotten."""
        for silence_id, silence in list(self.silences.items()):
            if datetime.fromisoformat(silence.ends_at) <= now:
                del self.silences[silence_id]
                continue
            if silence.active(now) and silence_matches(silence.matchers, labels):
                return silence_id
        return None

    # --- persistence ---------------------------------------------------------------------

    def _load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            self.alerts = {
                fp: AlertEntry(**{**a, "before": Before(**a.get("before", {}))})
                for fp, a in data.get("alerts", {}).items()
            }
            self.silences = {k: Silence(**v) for k, v in data.get("silences", {}).items()}
            self.failing_routes = set(data.get("failing_routes", []))
            self.done_seq = {str(k): int(v) for k, v in data.get("done_seq", {}).items()}
        except (OSError, ValueError, TypeError, ValidationError) as exc:
            log.error(
                "%s: cannot be read (%s): starting with no alert or silence known", self.path, exc
            )

    def handled(self, cluster: str, seq: int) -> bool:
        return seq <= self.done_seq.get(cluster, 0)

    async def save(self) -> None:
        """Write the whole state (small: alerts seen, silences) and fsync it: serialized
        here, written in a thread, one save at a time."""
        if self.path is None:
            return
        self._forget_old()
        data: dict[str, Any] = {
            "alerts": {fp: asdict(a) for fp, a in self.alerts.items()},
            "silences": {k: asdict(v) for k, v in self.silences.items()},
            "failing_routes": sorted(self.failing_routes),
            "done_seq": dict(self.done_seq),
        }
        text = json.dumps(data, separators=(",", ":"))
        async with self._saving:
            await asyncio.to_thread(_write_atomically, self.path, text)

    def _forget_old(self, keep: int = 5000) -> None:
        """Alerts cleared long ago go first once there are more than ``keep``."""
        if len(self.alerts) <= keep:
            return
        cleared = [fp for fp, a in self.alerts.items() if not a.firing]
        for fp in cleared[: len(self.alerts) - keep]:
            del self.alerts[fp]


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def now_utc() -> datetime:
    return datetime.now(UTC)
