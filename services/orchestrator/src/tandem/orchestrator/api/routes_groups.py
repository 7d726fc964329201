"""``/api/v1/groups``: cluster groups, and group switchovers."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Response, status

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
from tandem.orchestrator.views import Accepted, GroupView

router = APIRouter(prefix=PREFIX, tags=["groups"])
mutations = APIRouter(
    prefix=PREFIX, tags=["groups"], route_class=AuditedRoute, max_body_size=MAX_BODY_BYTES
)


class GroupSwitchoverRequest(RequestBody):
    """Switch every member of the group over, in the order of their dependencies."""

    reason: Reason = DEFAULT_REASON


@router.get("/groups", summary="All cluster groups")
async def list_groups(facade: Facade, _: Viewer) -> list[GroupView]:
    return facade.groups()


@mutations.post(
    "/groups/{group}/switchover",
    name="group_switchover",
    summary="Start a group switchover",
    status_code=status.HTTP_202_ACCEPTED,
    responses=error_responses(403, 404, 409, 413, 422),
)
async def group_switchover(
    group: Annotated[str, Path(description="The group's name", max_length=200)],
    facade: Facade,
    principal: Operator,
    response: Response,
    body: Annotated[GroupSwitchoverRequest | None, Body()] = None,
) -> Accepted:
    request = body if body is not None else GroupSwitchoverRequest()
    saga_id = await facade.group_switchover(group, principal.actor, request.reason)
    return accepted(response, saga_id)
