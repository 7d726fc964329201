"""What ``/metrics`` needs beyond the cluster views: every saga of the fold (kind, state,
start and end), the open alerts of each cluster, and each live node's queue depths (from
its heartbeat). Read at scrape time; nothing here is kept apart from the fold."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime

from tandem.events.names import SYSTEM_CLUSTER
from tandem.orchestrator.cluster_pages import Pacer
from tandem.orchestrator.liveness import Liveness
from tandem.orchestrator.state import ClusterState

#: The queue gauges of a heartbeat shown as metrics: ``<queue>_queue_<what>``.
QUEUE_GAUGE = re.compile(r"^(send|receive)_queue_(batches|bytes|oldest_age_s)$")


@dataclass(frozen=True)
class SagaSample:
    id: str
    kind: str
    cluster: str
    #: running, completed, failed, needs_operator.
    state: str
    started_at: datetime
    ended_at: datetime | None = None

    @property
    def duration_s(self) -> float | None:
        if self.ended_at is None:
            return None
        return max((self.ended_at - self.started_at).total_seconds(), 0.0)


@dataclass(frozen=True)
class QueueDepth:
    cluster: str
    node: str
    #: send (on the Active) or receive (on a Passive).
    queue: str
    batches: float | None = None
    bytes: float | None = None
    oldest_age_s: float | None = None


@dataclass(frozen=True)
class Telemetry:
    sagas: list[SagaSample] = field(default_factory=list)
    #: cluster -> the codes of its open alerts.
    alerts: dict[str, list[str]] = field(default_factory=dict)
    queues: list[QueueDepth] = field(default_factory=list)


def queue_depths(cluster: str, node: str, gauges: dict[str, float]) -> list[QueueDepth]:
    found: dict[str, dict[str, float]] = {}
    for key, value in gauges.items():
        match = QUEUE_GAUGE.match(key)
        if match is not None:
            found.setdefault(match.group(1), {})[match.group(2)] = float(value)
    return [
        QueueDepth(cluster, node, queue, v.get("batches"), v.get("bytes"), v.get("oldest_age_s"))
        for queue, v in sorted(found.items())
    ]


class TelemetrySource:
    """``telemetry()`` over the fold and the live heartbeats (a mixin of ``Orchestrator``)."""

    state: ClusterState
    liveness: Liveness

    async def telemetry(self) -> Telemetry:
        """Read a slice at a time (the loop gets a turn between slices): a long history has
        many sagas, and 2,000 clusters 4,000 nodes."""
        pacer = Pacer()
        sagas = []
        for s in list(self.state.sagas.values()):
            await pacer.turn()
            sagas.append(
                SagaSample(s.id, str(s.kind), s.cluster, s.state, s.started_at, s.ended_at)
            )
        alerts = {
            name: sorted(a.code for a in list(c.alerts.values()))
            for name, c in list(self.state.clusters.items())
            if c.alerts and name != SYSTEM_CLUSTER
        }
        queues: list[QueueDepth] = []
        for cluster, node in sorted(self.liveness.seen):
            await pacer.turn()
            if not self.liveness.alive(cluster, node):
                continue
            beat = self.liveness.heartbeat(cluster, node)
            if beat is not None:
                queues.extend(queue_depths(cluster, node, dict(beat.queues)))
        return Telemetry(sagas=sagas, alerts=alerts, queues=queues)
