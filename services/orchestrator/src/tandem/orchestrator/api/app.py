"""``create_app``: the orchestrator's REST API assembled from its routers.

Everything is under ``/api/v1`` (bearer tokens, see ``auth``) except ``/healthz`` and
``/metrics``; OpenAPI at ``/openapi.json``, interactive docs at ``/docs``.
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI
from fastapi.middleware.gzip import GZipMiddleware
from prometheus_client import CollectorRegistry

from tandem.orchestrator.api import (
    console,
    routes_alerts,
    routes_clusters,
    routes_dns,
    routes_groups,
    routes_ops,
    routes_sagas,
    routes_stream,
    routes_whoami,
)
from tandem.orchestrator.api.auth import STATE_KEY, TokenStore
from tandem.orchestrator.api.deps import FACADE_KEY
from tandem.orchestrator.api.errors import install_error_handlers
from tandem.orchestrator.api.metrics import ApiMetrics, MetricsMiddleware
from tandem.orchestrator.api.routes_maintenance import mutations as maintenance_mutations
from tandem.orchestrator.api.routes_nodes import mutations as node_mutations
from tandem.orchestrator.api.routes_ops import METRICS_KEY
from tandem.orchestrator.api.server import STOPPING_KEY
from tandem.orchestrator.facade import OrchestratorFacade

API_VERSION = "1"
#: Answers from this size on are gzipped for clients that accept it (at a level cheap on CPU).
GZIP_MIN_BYTES = 4096
GZIP_LEVEL = 5

DESCRIPTION = """\
The orchestrator of Tandem: the state of the protected clusters, switchovers and failovers.

Send a token as `Authorization: Bearer <token>`. Reading needs the *viewer* role; starting a
switchover or failover needs *operator*. A mutation answers 202 with the saga that carries
it out: follow its `status_url`. Errors are `{"detail": "<message>"}`.
"""


def create_app(
    facade: OrchestratorFacade,
    tokens: TokenStore,
    *,
    metrics_registry: CollectorRegistry | None = None,
) -> FastAPI:
    """The API over ``facade``. Metrics go to ``metrics_registry`` or to a new registry of
    this app (``app.state.metrics.registry``); never to the process-wide default one.
    ``serve`` sets ``app.state.port`` once it listens."""
    app = FastAPI(
        title="Tandem orchestrator",
        version=API_VERSION,
        description=DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    metrics = ApiMetrics(metrics_registry)
    setattr(app.state, FACADE_KEY, facade)
    setattr(app.state, STATE_KEY, tokens)
    setattr(app.state, METRICS_KEY, metrics)
    app.state.port = None
    setattr(app.state, STOPPING_KEY, asyncio.Event())

    install_error_handlers(app)
    for module in (routes_clusters, routes_groups):
        app.include_router(module.router)
        app.include_router(module.mutations)
    app.include_router(maintenance_mutations)
    app.include_router(node_mutations)
    app.include_router(routes_dns.mutations)
    app.include_router(routes_sagas.router)
    app.include_router(routes_sagas.mutations)
    app.include_router(routes_alerts.router)
    app.include_router(routes_alerts.mutations)
    app.include_router(routes_stream.router)
    app.include_router(routes_whoami.router)
    app.include_router(routes_ops.router)
    console.install_console(app)

    docs = {app.openapi_url, app.docs_url, app.swagger_ui_oauth2_redirect_url}
    known = frozenset(path for path in docs if path)
    # Lists are large (GET /clusters of 2,000 clusters: 2.8 MB of JSON); the live stream is
    # never compressed (text/event-stream is excluded: compression would hold its frames).
    app.add_middleware(GZipMiddleware, minimum_size=GZIP_MIN_BYTES, compresslevel=GZIP_LEVEL)
    app.add_middleware(MetricsMiddleware, metrics=metrics, known_paths=known)
    return app
