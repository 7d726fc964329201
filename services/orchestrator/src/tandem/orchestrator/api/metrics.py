"""Prometheus metrics of the API: requests (by a middleware) and the orchestrator's state
(a snapshot taken from the facade when ``/metrics`` is scraped: ``metrics_state``).

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

import asyncio
import inspect
import logging
import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tandem.orchestrator.api.metrics_state import SnapshotBuilder, StateCollector, exposition
from tandem.orchestrator.cluster_pages import ClusterQuery, Pacer, drop
from tandem.orchestrator.facade import OrchestratorFacade
from tandem.orchestrator.telemetry import Telemetry

log = logging.getLogger(__name__)

#: The route label of a request that matched no route (kept apart so that scanners probing
#: random paths cannot create a label value per path).
UNMATCHED = "<unmatched>"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
#: How an OpenMetrics exposition ends.
OM_EOF = b"# EOF\n"
#: Saga durations: from a quick switchover to a group that takes its time.
SAGA_BUCKETS = (1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)


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
        self.saga_duration = Histogram(
            "tandem_saga_duration_seconds",
            "Time from a saga's start to its end, by kind and outcome",
            ["kind", "outcome"],
            buckets=SAGA_BUCKETS,
            registry=r,
        )
        self.state = StateCollector()
        r.register(self.state)
        #: The sagas whose duration was observed (each once).
        self._observed: set[str] = set()
        self.scrape_errors = Counter(
            "tandem_api_state_scrape_errors",
            "Scrapes for which the orchestrator state could not be read",
            registry=r,
        )
        #: One scrape at a time: each reads the snapshot it made.
        self._scraping = asyncio.Lock()

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route=route, method=method, status=str(status)).inc()
        self.latency.labels(route=route, method=method).observe(seconds)

    async def refresh(self, facade: OrchestratorFacade) -> None:
        """Take the state's snapshot from the facade (at scrape time), a slice at a time."""
        try:
            builder = SnapshotBuilder()
            names = (await facade.cluster_page(ClusterQuery(limit=None), builder.cluster)).items
            groups = await facade.groups()
            leader = facade.is_leader()
            source = getattr(facade, "telemetry", None)  # a facade may not have it
            found = source() if callable(source) else Telemetry()
            telemetry = await found if inspect.isawaitable(found) else found
            snapshot = await builder.finish(names, groups, leader, telemetry)
        except Exception:
            log.exception("cannot read the orchestrator state for /metrics")
            self.scrape_errors.inc()
            return
        old, self.state.snapshot = self.state.snapshot, snapshot
        pacer = Pacer()
        for saga in telemetry.sagas:
            await pacer.turn()
            duration = saga.duration_s
            if duration is not None and saga.id not in self._observed:
                self._observed.add(saga.id)
                self.saga_duration.labels(kind=saga.kind, outcome=saga.state).observe(duration)
        # What was read and the last snapshot, freed a slice at a time (~100,000 objects).
        for items in (telemetry.sagas, telemetry.queues, groups, *old.gauges.values()):
            await drop(items)

    async def scrape(self, facade: OrchestratorFacade, accept: str) -> tuple[list[bytes], str]:
        """The exposition (in the format ``accept`` asks for), in pieces, and its content
        type: the registry's own metrics by its encoder (a few hundred samples), the state's
        ~90,000 (2,000 clusters) by ``metrics_state.exposition``, a slice at a time."""
        encoder, content_type = choose_encoder(accept)
        openmetrics = content_type.startswith("application/openmetrics-text")
        async with self._scraping:
            await self.refresh(facade)
            self.state.hidden = True
            try:
                rest = encoder(self.registry)
            finally:
                self.state.hidden = False
            state = await exposition(self.state.snapshot, openmetrics=openmetrics)
        if openmetrics and rest.endswith(OM_EOF):
            return [rest[: -len(OM_EOF)], *state, OM_EOF], content_type
        return [rest, *state], content_type


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
