"""``/api/v1/groups``: cluster groups, and group switchovers."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Response, status
from pydantic import Field

from tandem.events.catalog.vocabulary import Identity
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
from tandem.orchestrator.cluster_pages import drop, json_list
from tandem.orchestrator.views import GroupSwitchoverAccepted, GroupView

router = APIRouter(prefix=PREFIX, tags=["groups"])
mutations = APIRouter(
    prefix=PREFIX, tags=["groups"], route_class=AuditedRoute, max_body_size=MAX_BODY_BYTES
)


class GroupSwitchoverRequest(RequestBody):
    """Switch every member of the group over, in the order of their dependencies."""

    to: Identity | None = Field(
        default=None,
        description="Move each member to its node of this identity (members already Active "
        "there are skipped); null: each member to the orchestrator's pick",
    )
    reason: Reason = DEFAULT_REASON


@router.get("/groups", summary="All cluster groups", response_model=list[GroupView])
async def list_groups(facade: Facade, _: Viewer) -> Response:
    groups = await facade.groups()
    body = await json_list(groups)
    await drop(groups)
    return Response(body, media_type="application/json")


@mutations.post(
    "/groups/{group}/switchover",
    name="group_switchover",
    summary="Start a group switchover",
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(403, 404, 409, 413, 422),
    response_model_exclude_none=True,
)
async def group_switchover(
    group: Annotated[str, Path(description="The group's name", max_length=200)],
    facade: Facade,
    principal: Operator,
    response: Response,
    body: Annotated[GroupSwitchoverRequest | None, Body()] = None,
) -> GroupSwitchoverAccepted:
    request = body if body is not None else GroupSwitchoverRequest()
    if request.to is None:
        saga_id = await facade.group_switchover(group, principal.actor, request.reason)
        return GroupSwitchoverAccepted(**accepted(response, saga_id).model_dump())
    saga_id, skipped = await facade.group_switchover_to(
        group, request.to, principal.actor, request.reason
    )
    answer = accepted(response, saga_id)
    return GroupSwitchoverAccepted(**answer.model_dump(), to=request.to, skipped=skipped)
