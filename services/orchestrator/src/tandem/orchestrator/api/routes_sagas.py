"""``/api/v1/sagas`` and ``/api/v1/events``: what the orchestrator did and is doing."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from tandem.events.names import ClusterName
from tandem.orchestrator.api.deps import PREFIX, Facade, Viewer
from tandem.orchestrator.api.errors import error_responses
from tandem.orchestrator.views import EventView, SagaView

MAX_EVENTS = 1000

router = APIRouter(prefix=PREFIX)


@router.get("/sagas/{saga_id}", tags=["sagas"], summary="One saga", responses=error_responses(404))
async def get_saga(
    saga_id: Annotated[str, Path(description="As returned by a mutation", max_length=200)],
    facade: Facade,
    _: Viewer,
) -> SagaView:
    return facade.saga(saga_id)


@router.get(
    "/events", tags=["events"], summary="Events, oldest first", responses=error_responses(422)
)
async def list_events(
    facade: Facade,
    _: Viewer,
    cluster: Annotated[ClusterName | None, Query(description="Only this cluster's")] = None,
    after: Annotated[int, Query(ge=0, description="Only events with a larger seq")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_EVENTS, description="At most this many")] = 100,
) -> list[EventView]:
    return await facade.events(cluster, after, limit)
