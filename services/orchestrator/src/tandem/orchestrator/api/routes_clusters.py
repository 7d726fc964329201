"""``/api/v1/clusters``: the clusters' state, and switchover and failover requests."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Body, HTTPException, Path, Query, Request, Response, status
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
    StrictQuery,
    Viewer,
    accepted,
)
from tandem.orchestrator.api.errors import error_responses
from tandem.orchestrator.cluster_pages import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    ClusterPage,
    ClusterQuery,
    as_json,
    json_array,
)
from tandem.orchestrator.views import (
    Accepted,
    ActionPreview,
    ClusterView,
    LagHistoryView,
    ServiceStatus,
)

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


PAGE_HEADERS = {
    "Link": {
        "description": 'The next page: `<URL>; rel="next"` (absent on the last page)',
        "schema": {"type": "string"},
    },
    "X-Total-Count": {
        "description": "How many clusters match the filters (on every page)",
        "schema": {"type": "integer"},
    },
}


def _text(description: str) -> object:
    return Query(min_length=1, max_length=200, description=description)


def page_headers(request: Request, page: ClusterPage[bytes]) -> dict[str, str]:
    """``X-Total-Count``, and ``Link`` to the next page: the same query, ``after`` the last
    name of this one."""
    headers = {"X-Total-Count": str(page.total)}
    if page.next_after is not None:
        query = [(k, v) for k, v in request.query_params.multi_items() if k != "after"]
        query.append(("after", page.next_after))
        headers["Link"] = f'<{request.url.path}?{urlencode(query)}>; rel="next"'
    return headers


@router.get(
    "/clusters",
    summary="The clusters, a page at a time, in name order",
    response_model=list[ClusterView],
    responses={200: {"headers": PAGE_HEADERS}, **error_responses(422)},
)
async def list_clusters(
    request: Request,
    facade: Facade,
    _: Viewer,
    _known: Annotated[None, StrictQuery],
    limit: Annotated[
        int, Query(ge=1, le=MAX_LIMIT, description=f"At most this many (1 to {MAX_LIMIT})")
    ] = DEFAULT_LIMIT,
    after: Annotated[
        str | None,
        Query(
            max_length=200,
            description="Only the clusters named after this (name order; it need not be a "
            "cluster's name): the next page starts after the last name of the previous one",
        ),
    ] = None,
    service: Annotated[
        list[ServiceStatus] | None,
        Query(alias="status", description="Only with this service status (repeatable: any of)"),
    ] = None,
    group: Annotated[str | None, _text("Only the members of this group")] = None,
    node: Annotated[str | None, _text("Only the clusters with a node of this name")] = None,
    q: Annotated[str | None, _text("Only the clusters whose name contains this")] = None,
) -> Response:
    """The views of the clusters the filters select, at most ``limit``. The body is a JSON
    list; `Link: <...>; rel="next"` gives the next page (absent on the last) and
    `X-Total-Count` how many match on all pages. An unknown parameter is refused (422)."""
    query = ClusterQuery(
        limit=limit,
        after=after,
        status=frozenset(service or ()),
        group=group,
        node=node,
        q=q,
    )
    page = await facade.cluster_page(query, as_json)
    body = json_array(page.items)
    return Response(body, media_type="application/json", headers=page_headers(request, page))


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
