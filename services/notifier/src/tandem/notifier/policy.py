"""Which route gets which notification, and which ones are held back.

A route selects by kind, severity (alerts), cluster or group, and code. Then, in order:
a silence that matches the labels holds it back until the silence ends; a firing alert
raised again is not sent again while it is acknowledged or before ``repeat_interval_s``;
a resolved notification goes only to the routes its firing went to; and the rate limit
(per route and cluster) holds back what passes ``max`` in ``per_s`` seconds.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime

from tandem.notifier.book import Before, Book
from tandem.notifier.config import SEVERITY_RANK, NotifierConfig, Route
from tandem.notifier.notification import Notification

ROUTE_FAILING = "notifier.route_failing"


class Policy:
    def __init__(self, config: NotifierConfig, book: Book) -> None:
        self.config = config
        self.book = book
        self._sent: dict[tuple[str, str], deque[float]] = {}
        self._held: dict[tuple[str, str], int] = {}

    def selects(self, route: Route, n: Notification) -> bool:
        m = route.match
        if n.kind not in m.kinds:
            return False
        if n.code == ROUTE_FAILING and n.subject == route.name:
            return False  # a route is not told that it fails: the others are
        if n.kind == "alert" and n.status == "firing":
            if SEVERITY_RANK[n.severity] < SEVERITY_RANK[m.severity]:
                return False
        if m.clusters or m.groups:
            wanted = set(m.clusters) | self.config.clusters_of(m.groups)
            if n.cluster not in wanted:
                return False
        return m.code_matches(n.code)

    def held_back(
        self, route: Route, n: Notification, before: Before | None, now: datetime
    ) -> str | None:
        """Why ``n`` is not sent on ``route`` (None: it is sent)."""
        silence = self.book.silenced_by(n.silence_labels(), now)
        if silence is not None:
            return f"silenced by {silence}"
        if n.kind == "alert":
            reason = self._alert_rule(route, n, before, now)
            if reason is not None:
                return reason
        return self._rate(route, n, now)

    def _alert_rule(
        self, route: Route, n: Notification, before: Before | None, now: datetime
    ) -> str | None:
        if n.status == "resolved":
            if not route.send_resolved:
                return "send_resolved is off"
            if before is None or not before.firing:
                return "it was not firing"
            if route.name not in before.sent:
                return "its firing was not sent on this route"
            return None
        if before is None or not before.firing:
            return None
        if before.acked:
            return "acknowledged"
        last = before.sent.get(route.name)
        if last is not None:
            age = (now - datetime.fromisoformat(last)).total_seconds()
            if age < route.repeat_interval_s:
                return f"sent {age:.0f}s ago (repeat_interval_s {route.repeat_interval_s:g})"
        return None

    def _rate(self, route: Route, n: Notification, now: datetime) -> str | None:
        limit = route.limit
        if limit is None:
            return None
        key = (route.name, n.cluster)
        window = self._sent.setdefault(key, deque())
        t = now.timestamp()
        while window and window[0] <= t - limit.per_s:
            window.popleft()
        if len(window) >= limit.max:
            self._held[key] = self._held.get(key, 0) + 1
            return f"rate limit: {limit.max} in {limit.per_s:g}s for {n.cluster}"
        window.append(t)
        return None

    def take_held(self, route: Route, cluster: str) -> int:
        """How many were held back by the rate limit since the last one sent (then 0)."""
        return self._held.pop((route.name, cluster), 0)
