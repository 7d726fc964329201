"""``/healthz`` and ``/metrics``: for load balancers and Prometheus, without a token."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel

from tandem.orchestrator.api.deps import Facade
from tandem.orchestrator.api.metrics import ApiMetrics

#: Where ``create_app`` keeps the ``ApiMetrics`` (``app.state.<this>``).
METRICS_KEY = "metrics"

#: The exposition is written this much at a time.
WRITE_BYTES = 64 * 1024

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
    pieces, content_type = await collectors.scrape(facade, request.headers.get("accept", ""))
    return StreamingResponse(_written(pieces), headers={"Content-Type": content_type})


async def _written(pieces: list[bytes]) -> AsyncIterator[bytes]:
    """``pieces`` a ``WRITE_BYTES`` at a time, the loop getting a turn between writes (the
    gzip middleware compresses each as it goes: ~0.5 ms), never one 5 MB body at once."""
    batch: list[bytes] = []
    size = 0
    for piece in pieces:
        batch.append(piece)
        size += len(piece)
        if size >= WRITE_BYTES:
            yield b"".join(batch)
            batch, size = [], 0
            await asyncio.sleep(0)  # a write that fits the socket's buffer does not wait
    if batch:
        yield b"".join(batch)
