"""Prometheus metrics of the API: requests (by a middleware) and the orchestrator's state
(gauges set from the facade when ``/metrics`` is scraped).

Each app gets its own ``CollectorRegistry`` (or the one it is given), never the process-wide
default one, so that several apps can live in one process (tests, embedded use).
"""

from __future__ import annotations

import logging
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tandem.orchestrator.facade import OrchestratorFacade
from tandem.orchestrator.views import ServiceStatus

log = logging.getLogger(__name__)

#: The route label of a request that matched no route (kept apart so that scanners probing
#: random paths cannot create a label value per path).
UNMATCHED = "<unmatched>"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


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
        self._labelled = (
            self.service,
            self.group_service,
            self.node_active,
            self.node_alive,
            self.node_fenced,
            self.lag_batches,
            self.lag_bytes,
            self.lag_oldest_age,
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
            for status in ServiceStatus:
                self.service.labels(cluster=c.name, status=status.value).set(
                    1 if c.service == status else 0
                )
            for node in c.nodes:
                labels = {"cluster": c.name, "node": node.name}
                self.node_active.labels(**labels).set(1 if node.role == "active" else 0)
                self.node_alive.labels(**labels).set(1 if node.alive else 0)
                self.node_fenced.labels(**labels).set(1 if node.fenced else 0)
                self.lag_batches.labels(**labels).set(node.lag_batches)
                self.lag_bytes.labels(**labels).set(node.lag_bytes)
                if node.lag_oldest_age_s is not None:  # unknown is no sample, not a 0
                    self.lag_oldest_age.labels(**labels).set(node.lag_oldest_age_s)
        for g in groups:
            for status in ServiceStatus:
                self.group_service.labels(group=g.name, status=status.value).set(
                    1 if g.service == status else 0
                )


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
