"""``/healthz`` and ``/metrics``: for load balancers and Prometheus, without a token."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from prometheus_client.exposition import choose_encoder
from pydantic import BaseModel

from tandem.orchestrator.api.deps import Facade
from tandem.orchestrator.api.metrics import ApiMetrics

#: Where ``create_app`` keeps the ``ApiMetrics`` (``app.state.<this>``).
METRICS_KEY = "metrics"

router = APIRouter(tags=["ops"])


class Health(BaseModel):
    ok: bool
    #: Whether this replica is the leader (the one that acts; followers refuse mutations).
    leader: bool


@router.get("/healthz", summary="Liveness of this replica")
async def healthz(facade: Facade) -> Health:
    return Health(ok=True, leader=facade.is_leader())


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text format"}},
)
async def metrics(request: Request, facade: Facade) -> Response:
    collectors: ApiMetrics = getattr(request.app.state, METRICS_KEY)
    collectors.refresh(facade)
    encoder, content_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encoder(collectors.registry), headers={"Content-Type": content_type})
