"""``/api/v1/sagas`` and ``/api/v1/events``: what the orchestrator did and is doing; an
operator cancels a saga before its pivot or resumes one that stopped for an operator."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Protocol, cast

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response, status
from pydantic import AwareDatetime

from tandem.events.names import ClusterName
from tandem.orchestrator.api.audit import AuditedRoute
from tandem.orchestrator.api.deps import (
    DEFAULT_REASON,
    MAX_BODY_BYTES,
    PREFIX,
    Facade,
    Operator,
    Reason,
    RequestBody,
    Viewer,
    get_facade,
)
from tandem.orchestrator.api.errors import error_responses
from tandem.orchestrator.history import SagaSummary
from tandem.orchestrator.saga_control import SagaControlAccepted
from tandem.orchestrator.views import EventView, SagaView

MAX_EVENTS = 1000
MAX_SAGAS = 1000

router = APIRouter(prefix=PREFIX)
mutations = APIRouter(
    prefix=PREFIX, tags=["sagas"], route_class=AuditedRoute, max_body_size=MAX_BODY_BYTES
)

SagaPath = Annotated[str, Path(description="As returned by a mutation", max_length=200)]


class SagaFacade(Protocol):
    def saga_history(
        self, cluster: str | None, since: datetime | None, limit: int
    ) -> list[SagaSummary]: ...

    async def cancel_saga(self, saga_id: str, actor: str, reason: str) -> SagaControlAccepted: ...

    async def resume_saga(self, saga_id: str, actor: str, reason: str) -> SagaControlAccepted: ...


def get_sagas(request: Request) -> SagaFacade:
    return cast(SagaFacade, get_facade(request))


Sagas = Annotated[SagaFacade, Depends(get_sagas)]


class ReasonRequest(RequestBody):
    reason: Reason = DEFAULT_REASON


@router.get(
    "/sagas",
    tags=["sagas"],
    summary="Switchovers and failovers, newest first",
    responses=error_responses(404, 422),
)
async def list_sagas(
    sagas: Sagas,
    _: Viewer,
    cluster: Annotated[ClusterName | None, Query(description="Only this cluster's")] = None,
    since: Annotated[
        AwareDatetime | None, Query(description="Only those started then or later (with a zone)")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_SAGAS, description="At most this many")] = 50,
) -> list[SagaSummary]:
    return sagas.saga_history(cluster, since, limit)


@router.get("/sagas/{saga_id}", tags=["sagas"], summary="One saga", responses=error_responses(404))
async def get_saga(saga_id: SagaPath, facade: Facade, _: Viewer) -> SagaView:
    return facade.saga(saga_id)


@mutations.post(
    "/sagas/{saga_id}/cancel",
    name="saga_cancel",
    summary="Cancel a saga before its role change (what it did is undone)",
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(403, 404, 409, 413, 422),
)
async def cancel_saga(
    saga_id: SagaPath,
    sagas: Sagas,
    principal: Operator,
    response: Response,
    body: Annotated[ReasonRequest | None, Body()] = None,
) -> SagaControlAccepted:
    request = body if body is not None else ReasonRequest()
    answer = await sagas.cancel_saga(saga_id, principal.actor, request.reason)
    response.headers["Location"] = answer.status_url
    return answer


@mutations.post(
    "/sagas/{saga_id}/resume",
    name="saga_resume",
    summary="Resume a saga stopped for an operator, from the step it reached",
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(403, 404, 409, 413, 422),
)
async def resume_saga(
    saga_id: SagaPath,
    sagas: Sagas,
    principal: Operator,
    response: Response,
    body: Annotated[ReasonRequest | None, Body()] = None,
) -> SagaControlAccepted:
    request = body if body is not None else ReasonRequest()
    answer = await sagas.resume_saga(saga_id, principal.actor, request.reason)
    response.headers["Location"] = answer.status_url
    return answer


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
