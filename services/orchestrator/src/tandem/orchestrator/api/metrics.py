"""Prometheus metrics of the API: requests (by a middleware) and the orchestrator's state
(gauges set from the facade when ``/metrics`` is scraped).

Each app gets its own ``CollectorRegistry`` (or the one it is given), never the process-wide
default one, so that several apps can live in one process (tests, embedded use).

Labels stay bounded: cluster, node, group, a fixed set of statuses, roles, queues and saga
kinds, and alert codes (each a fixed code, per DNS name at most). The state part:

- per cluster: ``tandem_cluster_service_status{status}``, ``_epoch``, ``_paused``,
  ``tandem_alerts_active{code}``, ``tandem_failovers_total``, ``tandem_sagas{kind,state}``;
- per node: ``tandem_node_role{role}``, ``_active``, ``_alive``, ``_health{status}``,
  ``_fenced``, ``_isolated``, ``_standby``, ``_replication_lag_batches`` / ``_bytes`` /
  ``_oldest_age_seconds``, ``_queue_batches`` / ``_bytes`` / ``_oldest_age_seconds{queue}``;
- ``tandem_saga_duration_seconds{kind,outcome}``: each ended saga observed once (a replica
  observes the sagas of the whole stream once it has replayed it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tandem.events.catalog.vocabulary import HealthStatus, Role
from tandem.orchestrator.facade import OrchestratorFacade
from tandem.orchestrator.telemetry import Telemetry
from tandem.orchestrator.views import ClusterView, ServiceStatus

log = logging.getLogger(__name__)

#: The route label of a request that matched no route (kept apart so that scanners probing
#: random paths cannot create a label value per path).
UNMATCHED = "<unmatched>"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: The role label of a node that has not said what it plays.
NO_ROLE = "unknown"
#: Saga durations: from a quick switchover to a group that takes its time.
SAGA_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)


class _Failovers(Collector):
    """``tandem_failovers_total{cluster}``: failover sagas started (as of the last scrape's
    fold; the fold only grows, so the counter never goes down within a process)."""

    def __init__(self) -> None:
        self.by_cluster: dict[str, int] = {}

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(
            "tandem_failovers", "Failover sagas started, automatic or confirmed", labels=["cluster"]
        )
        for cluster, n in sorted(self.by_cluster.items()):
            family.add_metric([cluster], n)
        yield family


class ApiMetrics:
    """The API's collectors, all registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "tandem_api_requests",
            "HTTP requests answered by the orchestrator API",
            ["route", "method", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "tandem_api_request_duration_seconds",
            "Time to answer an HTTP request of the orchestrator API",
            ["route", "method"],
            registry=r,
        )
        self.clusters = Gauge("tandem_clusters", "Protected clusters known", registry=r)
        self.nodes_alive = Gauge("tandem_nodes_alive", "Nodes whose heartbeats arrive", registry=r)
        self.sagas_running = Gauge(
            "tandem_sagas_running", "Clusters with a saga running now", registry=r
        )
        self.is_leader = Gauge(
            "tandem_is_leader", "1 when this orchestrator replica is the leader", registry=r
        )
        self.service = Gauge(
            "tandem_cluster_service_status",
            "1 for the cluster's current service status (serving, degraded, down, "
            "needs_operator), 0 for the others",
            ["cluster", "status"],
            registry=r,
        )
        self.group_service = Gauge(
            "tandem_group_service_status",
            "1 for the group's current service status (the worst of its members'), 0 for the "
            "others",
            ["group", "status"],
            registry=r,
        )
        self.node_active = Gauge(
            "tandem_node_active",
            "1 when the node reports it plays Active",
            ["cluster", "node"],
            registry=r,
        )
        self.node_alive = Gauge(
            "tandem_node_alive",
            "1 when the node's heartbeats arrive",
            ["cluster", "node"],
            registry=r,
        )
        self.node_fenced = Gauge(
            "tandem_node_fenced", "1 when the node fenced itself", ["cluster", "node"], registry=r
        )
        self.lag_batches = Gauge(
            "tandem_node_replication_lag_batches",
            "Journal batches the target has not applied yet (0 on the Active)",
            ["cluster", "node"],
            registry=r,
        )
        self.lag_bytes = Gauge(
            "tandem_node_replication_lag_bytes",
            "Bytes the target has not applied yet (0 on the Active)",
            ["cluster", "node"],
            registry=r,
        )
        self.lag_oldest_age = Gauge(
            "tandem_node_replication_lag_oldest_age_seconds",
            "Seconds since the oldest change the target has not applied yet was captured "
            "(0 on the Active; no sample while unknown: the target is not heard from)",
            ["cluster", "node"],
            registry=r,
        )
        self.epoch = Gauge(
            "tandem_cluster_epoch",
            "The cluster's epoch (grows at each role change)",
            ["cluster"],
            registry=r,
        )
        self.paused = Gauge(
            "tandem_cluster_paused",
            "1 while the cluster is paused (no automatic failover or switchover)",
            ["cluster"],
            registry=r,
        )
        self.alerts = Gauge(
            "tandem_alerts_active",
            "Alerts raised and not cleared (acknowledged ones too), per code",
            ["cluster", "code"],
            registry=r,
        )
        self.sagas = Gauge(
            "tandem_sagas",
            "Sagas by kind and state (running, completed, failed, needs_operator)",
            ["cluster", "kind", "state"],
            registry=r,
        )
        self.saga_duration = Histogram(
            "tandem_saga_duration_seconds",
            "Time from a saga's start to its end, by kind and outcome",
            ["kind", "outcome"],
            buckets=SAGA_BUCKETS,
            registry=r,
        )
        self.node_role = Gauge(
            "tandem_node_role",
            "1 for the role the node reports it plays (active, passive, unknown), 0 for the others",
            ["cluster", "node", "role"],
            registry=r,
        )
        self.node_health = Gauge(
            "tandem_node_health",
            "1 for the worst status of the node's checks (ok, warning, critical, unknown), else 0",
            ["cluster", "node", "status"],
            registry=r,
        )
        self.node_isolated = Gauge(
            "tandem_node_isolated",
            "1 when every network check of the node fails",
            ["cluster", "node"],
            registry=r,
        )
        self.node_standby = Gauge(
            "tandem_node_standby",
            "1 when the node is kept from being chosen as a target",
            ["cluster", "node"],
            registry=r,
        )
        self.queue_batches = Gauge(
            "tandem_node_queue_batches",
            "Batches in the node's send or receive queue",
            ["cluster", "node", "queue"],
            registry=r,
        )
        self.queue_bytes = Gauge(
            "tandem_node_queue_bytes",
            "Bytes in the node's send or receive queue",
            ["cluster", "node", "queue"],
            registry=r,
        )
        self.queue_oldest_age = Gauge(
            "tandem_node_queue_oldest_age_seconds",
            "Age of the oldest batch in the node's send or receive queue",
            ["cluster", "node", "queue"],
            registry=r,
        )
        self.failovers = _Failovers()
        r.register(self.failovers)
        #: The sagas whose duration was observed (each once).
        self._observed: set[str] = set()
        self._labelled = (
            self.service,
            self.group_service,
            self.node_active,
            self.node_alive,
            self.node_fenced,
            self.lag_batches,
            self.lag_bytes,
            self.lag_oldest_age,
            self.epoch,
            self.paused,
            self.alerts,
            self.sagas,
            self.node_role,
            self.node_health,
            self.node_isolated,
            self.node_standby,
            self.queue_batches,
            self.queue_bytes,
            self.queue_oldest_age,
        )
        self.scrape_errors = Counter(
            "tandem_api_state_scrape_errors",
            "Scrapes for which the orchestrator state could not be read",
            registry=r,
        )

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route=route, method=method, status=str(status)).inc()
        self.latency.labels(route=route, method=method).observe(seconds)

    def refresh(self, facade: OrchestratorFacade) -> None:
        """Set the state gauges from the facade (at scrape time)."""
        try:
            clusters = facade.clusters()
            groups = facade.groups()
            leader = facade.is_leader()
            source = getattr(facade, "telemetry", None)  # a facade may not have it
            telemetry = source() if callable(source) else Telemetry()
        except Exception:
            log.exception("cannot read the orchestrator state for /metrics")
            self.scrape_errors.inc()
            return
        self.clusters.set(len(clusters))
        self.nodes_alive.set(sum(1 for c in clusters for node in c.nodes if node.alive))
        self.sagas_running.set(sum(1 for c in clusters if c.saga is not None))
        self.is_leader.set(1 if leader else 0)
        # Labelled gauges start again from nothing at each scrape: a cluster or node that is
        # gone leaves no stale series behind.
        for gauge in self._labelled:
            gauge.clear()
        for c in clusters:
            self._cluster(c)
        self._telemetry(telemetry, {c.name for c in clusters})
        for g in groups:
            for status in ServiceStatus:
                self.group_service.labels(group=g.name, status=status.value).set(
                    1 if g.service == status else 0
                )

    def _cluster(self, c: ClusterView) -> None:
        for status in ServiceStatus:
            self.service.labels(cluster=c.name, status=status.value).set(
                1 if c.service == status else 0
            )
        self.epoch.labels(cluster=c.name).set(c.epoch)
        self.paused.labels(cluster=c.name).set(
            1 if getattr(c, "maintenance", None) is not None else 0
        )
        for node in c.nodes:
            labels = {"cluster": c.name, "node": node.name}
            self.node_active.labels(**labels).set(1 if node.role == "active" else 0)
            self.node_alive.labels(**labels).set(1 if node.alive else 0)
            self.node_fenced.labels(**labels).set(1 if node.fenced else 0)
            self.node_isolated.labels(**labels).set(1 if node.isolated else 0)
            self.node_standby.labels(**labels).set(1 if getattr(node, "standby", False) else 0)
            role = node.role.value if node.role is not None else NO_ROLE
            for name in (*(r.value for r in Role), NO_ROLE):
                self.node_role.labels(**labels, role=name).set(1 if name == role else 0)
            for health in HealthStatus:
                self.node_health.labels(**labels, status=health.value).set(
                    1 if node.health == health else 0
                )
            self.lag_batches.labels(**labels).set(node.lag_batches)
            self.lag_bytes.labels(**labels).set(node.lag_bytes)
            if node.lag_oldest_age_s is not None:  # unknown is no sample, not a 0
                self.lag_oldest_age.labels(**labels).set(node.lag_oldest_age_s)

    def _telemetry(self, t: Telemetry, clusters: set[str]) -> None:
        for cluster, codes in t.alerts.items():
            for code in set(codes):  # one per open alert: a code may fire on several nodes
                self.alerts.labels(cluster=cluster, code=code).set(codes.count(code))
        counts: dict[tuple[str, str, str], int] = {}
        failovers: dict[str, int] = dict.fromkeys(clusters, 0)
        for saga in t.sagas:
            key = (saga.cluster, saga.kind, saga.state)
            counts[key] = counts.get(key, 0) + 1
            if saga.kind == "failover":
                failovers[saga.cluster] = failovers.get(saga.cluster, 0) + 1
            duration = saga.duration_s
            if duration is not None and saga.id not in self._observed:
                self._observed.add(saga.id)
                self.saga_duration.labels(kind=saga.kind, outcome=saga.state).observe(duration)
        for (cluster, kind, state), n in counts.items():
            self.sagas.labels(cluster=cluster, kind=kind, state=state).set(n)
        self.failovers.by_cluster = failovers
        for q in t.queues:
            labels = {"cluster": q.cluster, "node": q.node, "queue": q.queue}
            for gauge, value in (
                (self.queue_batches, q.batches),
                (self.queue_bytes, q.bytes),
                (self.queue_oldest_age, q.oldest_age_s),
            ):
                if value is not None:
                    gauge.labels(**labels).set(value)


class MetricsMiddleware:
    """Pure ASGI middleware counting requests and timing them, labelled by route template
    (``/api/v1/clusters/{cluster}``), method and status."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics, known_paths: frozenset[str]) -> None:
        self.app = app
        self.metrics = metrics
        #: Fixed paths served by routes that do not record themselves in the scope
        #: (``/docs``, ``/openapi.json``...).
        self.known_paths = known_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # unless a response starts: an exception escaped

        async def send_and_watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_and_watch)
        finally:
            elapsed = time.perf_counter() - started
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            self.metrics.observe(self._route(scope), method, status, elapsed)

    def _route(self, scope: Scope) -> str:
        route = scope.get("route")
        template = getattr(route, "path_format", None) or getattr(route, "path", None)
        if isinstance(template, str) and template:
            return template
        path = scope.get("path", "")
        return path if path in self.known_paths else UNMATCHED
