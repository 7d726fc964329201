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
            leader = facade.is_leader()
        except Exception:
            log.exception("cannot read the orchestrator state for /metrics")
            self.scrape_errors.inc()
            return
        self.clusters.set(len(clusters))
        self.nodes_alive.set(sum(1 for c in clusters for node in c.nodes if node.alive))
        self.sagas_running.set(sum(1 for c in clusters if c.saga is not None))
        self.is_leader.set(1 if leader else 0)


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
