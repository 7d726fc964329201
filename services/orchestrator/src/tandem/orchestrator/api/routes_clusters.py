"""``/api/v1/clusters``: the clusters' state, and switchover and failover requests."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Path, Query, Response, status
from pydantic import Field, StrictBool, field_validator

from tandem.events.names import ClusterName, NodeName
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
    accepted,
)
from tandem.orchestrator.api.errors import error_responses
from tandem.orchestrator.views import Accepted, ActionPreview, ClusterView, LagHistoryView

FAILOVER_NEEDS_CONFIRM = "a failover needs confirm: true"

router = APIRouter(prefix=PREFIX, tags=["clusters"])
mutations = APIRouter(
    prefix=PREFIX, tags=["clusters"], route_class=AuditedRoute, max_body_size=MAX_BODY_BYTES
)

ClusterPath = Annotated[ClusterName, Path(description="The cluster's name")]
TargetQuery = Annotated[
    NodeName | None, Query(description="The new Active to preview; absent: the best")
]


class SwitchoverRequest(RequestBody):
    """A managed switchover: the Active hands over to ``to`` (or the best candidate)."""

    to: NodeName | None = Field(default=None, description="The new Active; null: the best")
    reason: Reason = DEFAULT_REASON


class FailoverRequest(RequestBody):
    """An operator confirms a recommended failover, or forces one."""

    to: NodeName | None = Field(default=None, description="The new Active; null: the best")
    confirm: StrictBool = Field(default=False, validate_default=True, description="Must be true")
    reason: Reason = DEFAULT_REASON

    @field_validator("confirm")
    @classmethod
    def _confirmed(cls, value: bool) -> bool:
        if value is not True:
            raise ValueError(FAILOVER_NEEDS_CONFIRM)
        return value


@router.get("/clusters", summary="All clusters")
async def list_clusters(facade: Facade, _: Viewer) -> list[ClusterView]:
    return facade.clusters()


@router.get("/clusters/{cluster}", summary="One cluster", responses=error_responses(404, 422))
async def get_cluster(cluster: ClusterPath, facade: Facade, _: Viewer) -> ClusterView:
    return facade.cluster(cluster)


@router.get(
    "/clusters/{cluster}/lag",
    summary="Each target's replication lag over the last hour",
    responses=error_responses(404, 422),
)
async def lag_history(
    cluster: ClusterPath,
    facade: Facade,
    _: Viewer,
    minutes: Annotated[float, Query(gt=0, le=60, description="How far back")] = 60,
) -> LagHistoryView:
    return facade.lag_history(cluster, minutes)


@mutations.post(
    "/clusters/{cluster}/switchover",
    name="switchover",
    summary="Start a managed switchover",
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(403, 404, 409, 413, 422),
)
async def switchover(
    cluster: ClusterPath,
    facade: Facade,
    principal: Operator,
    response: Response,
    body: Annotated[SwitchoverRequest | None, Body()] = None,
) -> Accepted:
    request = body if body is not None else SwitchoverRequest()
    saga_id = await facade.switchover(cluster, request.to, principal.actor, request.reason)
    return accepted(response, saga_id)


@mutations.post(
    "/clusters/{cluster}/failover",
    name="failover",
    summary="Confirm or force a failover",
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(403, 404, 409, 413, 422),
)
async def failover(
    cluster: ClusterPath,
    facade: Facade,
    principal: Operator,
    response: Response,
    body: Annotated[FailoverRequest | None, Body()] = None,
) -> Accepted:
    if body is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, FAILOVER_NEEDS_CONFIRM)
    saga_id = await facade.failover(cluster, body.to, principal.actor, body.reason)
    return accepted(response, saga_id)


@router.get(
    "/clusters/{cluster}/switchover/preview",
    summary="What a switchover would do now (starts nothing)",
    responses=error_responses(404, 422),
)
async def switchover_preview(
    cluster: ClusterPath, facade: Facade, _: Viewer, to: TargetQuery = None
) -> ActionPreview:
    """The guard's verdict (a refusal says why, as the switchover would answer), the target it
    would choose and the saga's steps. Nothing is started or recorded."""
    return facade.switchover_preview(cluster, to)


@router.get(
    "/clusters/{cluster}/failover/preview",
    summary="What a confirmed failover would do now (starts nothing)",
    responses=error_responses(404, 422),
)
async def failover_preview(
    cluster: ClusterPath, facade: Facade, _: Viewer, to: TargetQuery = None
) -> ActionPreview:
    return facade.failover_preview(cluster, to)
