"""The replication lag of every target over the last hour (the console's lag chart):
sampled from the same views the API shows, every ``LAG_SAMPLE_S``, kept in memory. The
views of 2,000 clusters take ~0.2 s to build: each is built and read in turn, a slice of
them at a time (``each_cluster``).

Kept per (cluster, node) as three parallel arrays (time, lag bytes, lag seconds), so an hour
of 2,000 clusters' targets is a few MB. A replica that restarts starts with no history: the
figures come from heartbeats, not from a store; only a node that is not Active is a target.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from array import array
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from tandem.orchestrator.views import ClusterView

log = logging.getLogger(__name__)

LAG_SAMPLE_S = 10.0
LAG_KEEP_S = 3600.0


@dataclass
class LagSeries:
    #: Unix times, bytes not applied, seconds behind (NaN: unknown).
    at: array[float] = field(default_factory=lambda: array("d"))
    lag_bytes: array[float] = field(default_factory=lambda: array("d"))
    lag_s: array[float] = field(default_factory=lambda: array("d"))

    def add(self, at: float, lag_bytes: int, lag_s: float | None, keep_after: float) -> None:
        self.at.append(at)
        self.lag_bytes.append(float(lag_bytes))
        self.lag_s.append(math.nan if lag_s is None else lag_s)
        self.prune(keep_after)

    def prune(self, keep_after: float) -> None:
        old = 0
        while old < len(self.at) and self.at[old] < keep_after:
            old += 1
        if old:
            del self.at[:old], self.lag_bytes[:old], self.lag_s[:old]

    def points(self, since: float) -> list[tuple[float, int, float | None]]:
        return [
            (t, int(b), None if math.isnan(s) else s)
            for t, b, s in zip(self.at, self.lag_bytes, self.lag_s, strict=True)
            if t >= since
        ]


class LagHistory:
    def __init__(
        self,
        each_cluster: Callable[[Callable[[ClusterView], object]], Awaitable[object]],
        *,
        every_s: float = LAG_SAMPLE_S,
        keep_s: float = LAG_KEEP_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``each_cluster(visit)``: ``visit`` every cluster's view (a slice at a time)."""
        self._each_cluster = each_cluster
        self.every_s = every_s
        self.keep_s = keep_s
        self._clock = clock
        #: By cluster, then by target node.
        self._series: dict[str, dict[str, LagSeries]] = {}

    async def sample(self) -> None:
        """Every target's lag now, each view recorded as it is built (none is kept)."""
        now = self._clock()
        await self._each_cluster(lambda c: self.record(c, now))

    def record(self, c: ClusterView, now: float) -> None:
        keep_after = now - self.keep_s
        of_cluster = self._series.setdefault(c.name, {})
        # Without an Active there is no source, so no target.
        targets = {n.name for n in c.nodes if c.active and n.name != c.active}
        for n in c.nodes:
            if n.name in targets:
                series = of_cluster.setdefault(n.name, LagSeries())
                series.add(now, n.lag_bytes, n.lag_oldest_age_s, keep_after)
        for node, series in list(of_cluster.items()):
            if node not in targets:
                series.prune(keep_after)
                if not series.at:
                    del of_cluster[node]  # not a target for the whole window

    def of(self, cluster: str, since: float) -> dict[str, list[tuple[float, int, float | None]]]:
        """Each target's samples since the Unix time ``since``, oldest first."""
        nodes = self._series.get(cluster, {})
        return {node: nodes[node].points(since) for node in sorted(nodes)}

    async def run(self) -> None:
        while True:
            try:
                await self.sample()
            except Exception:  # a view that cannot be built now: the next sample tries again
                log.exception("sampling the replication lag failed")
            await asyncio.sleep(self.every_s)
