"""The state part of ``/metrics``: a snapshot of plain samples taken from the facade's views
at scrape time, a slice at a time on the loop, and a collector that shows the last snapshot.

At 2,000 clusters a scrape is ~90,000 samples. Setting as many labelled ``Gauge`` children
(cleared and made again at each scrape) held the loop for seconds; plain tuples cost a
fraction of that and, being a value apart from the orchestrator's state, can be encoded
off the loop (``ApiMetrics.scrape``). Every series a cluster or node that is gone had is gone
with the next snapshot.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from tandem.events.catalog.vocabulary import HealthStatus, Role
from tandem.orchestrator.cluster_pages import Pacer
from tandem.orchestrator.telemetry import Telemetry
from tandem.orchestrator.views import ClusterView, GroupView, ServiceStatus

#: The role label of a node that has not said what it plays.
NO_ROLE = "unknown"
_ROLES = (*(r.value for r in Role), NO_ROLE)
_NODE = ("cluster", "node")
_QUEUE = ("cluster", "node", "queue")

#: name -> (help, label names) of each gauge family of the state.
GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "tandem_clusters": ("Protected clusters known", ()),
    "tandem_nodes_alive": ("Nodes whose heartbeats arrive", ()),
    "tandem_sagas_running": ("Clusters with a saga running now", ()),
    "tandem_is_leader": ("1 when this orchestrator replica is the leader", ()),
    "tandem_cluster_service_status": (
        "1 for the cluster's current service status (serving, degraded, down, "
        "needs_operator), 0 for the others",
        ("cluster", "status"),
    ),
    "tandem_group_service_status": (
        "1 for the group's current service status (the worst of its members'), 0 for the others",
        ("group", "status"),
    ),
    "tandem_node_active": ("1 when the node reports it plays Active", _NODE),
    "tandem_node_alive": ("1 when the node's heartbeats arrive", _NODE),
    "tandem_node_fenced": ("1 when the node fenced itself", _NODE),
    "tandem_node_replication_lag_batches": (
        "Journal batches the target has not applied yet (0 on the Active)",
        _NODE,
    ),
    "tandem_node_replication_lag_bytes": (
        "Bytes the target has not applied yet (0 on the Active)",
        _NODE,
    ),
    "tandem_node_replication_lag_oldest_age_seconds": (
        "Seconds since the oldest change the target has not applied yet was captured "
        "(0 on the Active; no sample while unknown: the target is not heard from)",
        _NODE,
    ),
    "tandem_cluster_epoch": ("The cluster's epoch (grows at each role change)", ("cluster",)),
    "tandem_cluster_paused": (
        "1 while the cluster is paused (no automatic failover or switchover)",
        ("cluster",),
    ),
    "tandem_alerts_active": (
        "Alerts raised and not cleared (acknowledged ones too), per code",
        ("cluster", "code"),
    ),
    "tandem_sagas": (
        "Sagas by kind and state (running, completed, failed, needs_operator)",
        ("cluster", "kind", "state"),
    ),
    "tandem_node_role": (
        "1 for the role the node reports it plays (active, passive, unknown), 0 for the others",
        ("cluster", "node", "role"),
    ),
    "tandem_node_health": (
        "1 for the worst status of the node's checks (ok, warning, critical, unknown), else 0",
        ("cluster", "node", "status"),
    ),
    "tandem_node_isolated": ("1 when every network check of the node fails", _NODE),
    "tandem_node_standby": ("1 when the node is kept from being chosen as a target", _NODE),
    "tandem_node_queue_batches": ("Batches in the node's send or receive queue", _QUEUE),
    "tandem_node_queue_bytes": ("Bytes in the node's send or receive queue", _QUEUE),
    "tandem_node_queue_oldest_age_seconds": (
        "Age of the oldest batch in the node's send or receive queue",
        _QUEUE,
    ),
}

Sample = tuple[tuple[str, ...], float]


@dataclass(frozen=True)
class StateSnapshot:
    """Each gauge family's samples (label values, value), and failovers per cluster."""

    gauges: dict[str, list[Sample]] = field(default_factory=dict)
    failovers: dict[str, int] = field(default_factory=dict)


FAILOVERS = ("tandem_failovers", "Failover sagas started, automatic or confirmed", "cluster")


class StateCollector(Collector):
    """Shows the last snapshot; ``tandem_failovers_total{cluster}`` counts failover sagas
    started (as of the last scrape's fold: the fold only grows, so it never goes down).

    ``/metrics`` itself writes the snapshot with ``exposition`` (``hidden`` meanwhile, so
    the registry's own encoder writes the rest): the registry's encoder makes a dict and a
    tuple per sample, ~200,000 objects for the garbage collector to go through."""

    def __init__(self) -> None:
        self.snapshot = StateSnapshot()
        self.hidden = False

    def collect(self) -> Iterator[Metric]:
        if self.hidden:
            return
        # Replaced whole by each refresh, which then empties the one before: read it under
        # ``ApiMetrics.scrape``'s lock, or between scrapes (as the unit tests do).
        snapshot = self.snapshot
        for name, (text, labels) in GAUGES.items():
            family = GaugeMetricFamily(name, text, labels=list(labels))
            for values, value in snapshot.gauges.get(name, ()):
                family.add_metric(list(values), value)
            yield family
        failovers = CounterMetricFamily(FAILOVERS[0], FAILOVERS[1], labels=[FAILOVERS[2]])
        for cluster, n in sorted(snapshot.failovers.items()):
            failovers.add_metric([cluster], n)
        yield failovers


class SnapshotBuilder:
    """The samples of each cluster's view as it is built (``cluster``: a ``keep`` of
    ``cluster_page``), then of the groups and the telemetry (``finish``)."""

    def __init__(self) -> None:
        self.gauges: dict[str, list[Sample]] = {name: [] for name in GAUGES}
        self.clusters = 0
        self.nodes_alive = 0
        self.sagas_running = 0

    def add(self, name: str, value: float, *labels: str) -> None:
        self.gauges[name].append((labels, float(value)))

    def cluster(self, c: ClusterView) -> str:
        self.clusters += 1
        self.nodes_alive += sum(1 for node in c.nodes if node.alive)
        self.sagas_running += c.saga is not None
        for status in ServiceStatus:
            self.add("tandem_cluster_service_status", c.service == status, c.name, status.value)
        self.add("tandem_cluster_epoch", c.epoch, c.name)
        self.add("tandem_cluster_paused", getattr(c, "maintenance", None) is not None, c.name)
        for node in c.nodes:
            at = (c.name, node.name)
            self.add("tandem_node_active", node.role == "active", *at)
            self.add("tandem_node_alive", node.alive, *at)
            self.add("tandem_node_fenced", node.fenced, *at)
            self.add("tandem_node_isolated", node.isolated, *at)
            self.add("tandem_node_standby", bool(getattr(node, "standby", False)), *at)
            role = node.role.value if node.role is not None else NO_ROLE
            for name in _ROLES:
                self.add("tandem_node_role", name == role, *at, name)
            for health in HealthStatus:
                self.add("tandem_node_health", node.health == health, *at, health.value)
            self.add("tandem_node_replication_lag_batches", node.lag_batches, *at)
            self.add("tandem_node_replication_lag_bytes", node.lag_bytes, *at)
            if node.lag_oldest_age_s is not None:  # unknown is no sample, not a 0
                age = node.lag_oldest_age_s
                self.add("tandem_node_replication_lag_oldest_age_seconds", age, *at)
        return c.name

    async def _telemetry(self, t: Telemetry, clusters: set[str], pacer: Pacer) -> dict[str, int]:
        for cluster, codes in t.alerts.items():
            await pacer.turn()
            for code in sorted(set(codes)):  # one per open alert: a code may fire on several
                self.add("tandem_alerts_active", codes.count(code), cluster, code)
        counts: dict[tuple[str, str, str], int] = {}
        failovers: dict[str, int] = dict.fromkeys(clusters, 0)
        for saga in t.sagas:
            await pacer.turn()
            key = (saga.cluster, saga.kind, saga.state)
            counts[key] = counts.get(key, 0) + 1
            if saga.kind == "failover":
                failovers[saga.cluster] = failovers.get(saga.cluster, 0) + 1
        for (cluster, kind, state), n in counts.items():
            self.add("tandem_sagas", n, cluster, kind, state)
        for q in t.queues:
            await pacer.turn()
            for name, value in (
                ("tandem_node_queue_batches", q.batches),
                ("tandem_node_queue_bytes", q.bytes),
                ("tandem_node_queue_oldest_age_seconds", q.oldest_age_s),
            ):
                if value is not None:
                    self.add(name, value, q.cluster, q.node, q.queue)
        return failovers

    async def finish(
        self, names: list[str], groups: list[GroupView], leader: bool, telemetry: Telemetry
    ) -> StateSnapshot:
        """The snapshot, ``names`` being the clusters' (as ``cluster`` returned them)."""
        self.add("tandem_clusters", self.clusters)
        self.add("tandem_nodes_alive", self.nodes_alive)
        self.add("tandem_sagas_running", self.sagas_running)
        self.add("tandem_is_leader", leader)
        pacer = Pacer()
        failovers = await self._telemetry(telemetry, set(names), pacer)
        for g in groups:
            await pacer.turn()
            for status in ServiceStatus:
                self.add("tandem_group_service_status", g.service == status, g.name, status.value)
        return StateSnapshot(self.gauges, failovers)


def _label(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _help(text: str, openmetrics: bool) -> str:
    text = text.replace("\\", r"\\").replace("\n", r"\n")
    return text.replace('"', r"\"") if openmetrics else text


def _samples(name: str, labels: tuple[str, ...], samples: list[Sample]) -> list[str]:
    lines = []
    for values, value in samples:
        if labels:
            pairs = ",".join(f'{k}="{_label(v)}"' for k, v in zip(labels, values, strict=True))
            lines.append(f"{name}{{{pairs}}} {floatToGoString(value)}\n")
        else:
            lines.append(f"{name} {floatToGoString(value)}\n")
    return lines


async def exposition(snapshot: StateSnapshot, *, openmetrics: bool) -> list[bytes]:
    """``snapshot`` as the Prometheus text format (or OpenMetrics, without its ``# EOF``)
    writes it, what ``StateCollector`` would show: written a slice of samples at a time,
    in pieces (5 MB of text at 2,000 clusters: one buffer of it costs ~4 ms per copy)."""
    pacer = Pacer()
    out: list[bytes] = []

    async def family(name: str, kind: str, labels: tuple[str, ...], samples: list[Sample]) -> None:
        head = name if kind == "gauge" or openmetrics else f"{name}_total"
        text = _help(GAUGES[name][0] if kind == "gauge" else FAILOVERS[1], openmetrics)
        out.append(f"# HELP {head} {text}\n# TYPE {head} {kind}\n".encode())
        sample_name = name if kind == "gauge" else f"{name}_total"
        for start in range(0, len(samples), 200):
            await pacer.turn()
            out.append(
                "".join(_samples(sample_name, labels, samples[start : start + 200])).encode()
            )

    for name, (_, labels) in GAUGES.items():
        await family(name, "gauge", labels, snapshot.gauges.get(name, []))
    counts: list[Sample] = [((c,), float(n)) for c, n in sorted(snapshot.failovers.items())]
    await family(FAILOVERS[0], "counter", (FAILOVERS[2],), counts)
    return out
