"""``/api/v1/clusters/{c}/pause|resume`` and ``.../nodes/{n}/standby|unstandby``:
maintenance. A paused cluster gets no automatic failover or switchover (an operator's stay
allowed); a node in standby is never chosen as a target. Operator only, each audited."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Protocol, cast

from fastapi import APIRouter, Body, Depends, Path, Request
from pydantic import AwareDatetime, Field, model_validator

from tandem.events.names import ClusterName, NodeName
from tandem.orchestrator.api.audit import AuditedRoute
from tandem.orchestrator.api.deps import (
    DEFAULT_REASON,
    MAX_BODY_BYTES,
    PREFIX,
    Operator,
    Reason,
    RequestBody,
    get_facade,
)
from tandem.orchestrator.api.errors import error_responses
from tandem.orchestrator.maintenance import PauseAnswer, StandbyAnswer

#: The longest pause asked with ``for_s`` (30 days); a longer one is a pause until resumed.
MAX_PAUSE_S = 30 * 24 * 3600.0

mutations = APIRouter(
    prefix=PREFIX, tags=["maintenance"], route_class=AuditedRoute, max_body_size=MAX_BODY_BYTES
)

ClusterPath = Annotated[ClusterName, Path(description="The cluster's name")]
NodePath = Annotated[NodeName, Path(description="The node's name")]


class MaintenanceFacade(Protocol):
    async def pause(
        self, cluster: str, actor: str, reason: str, until: datetime | None
    ) -> PauseAnswer: ...

    async def resume_cluster(self, cluster: str, actor: str, reason: str) -> PauseAnswer: ...

    async def set_standby(
        self, cluster: str, node: str, standby: bool, actor: str, reason: str
    ) -> StandbyAnswer: ...


def get_maintenance(request: Request) -> MaintenanceFacade:
    return cast(MaintenanceFacade, get_facade(request))


Maintenance = Annotated[MaintenanceFacade, Depends(get_maintenance)]


class PauseRequest(RequestBody):
    """Pause for ``for_s`` seconds, until ``until``, or (neither) until a resume."""

    for_s: float | None = Field(
        default=None, gt=0, le=MAX_PAUSE_S, description="How long, in seconds"
    )
    until: AwareDatetime | None = Field(default=None, description="When it ends (with a zone)")
    reason: Reason = DEFAULT_REASON

    @model_validator(mode="after")
    def _one_end(self) -> PauseRequest:
        if self.for_s is not None and self.until is not None:
            raise ValueError("give for_s or until, not both")
        return self

    def end(self) -> datetime | None:
        if self.for_s is not None:
            return datetime.now(UTC) + timedelta(seconds=self.for_s)
        return self.until


class ReasonRequest(RequestBody):
    reason: Reason = DEFAULT_REASON


@mutations.post(
    "/clusters/{cluster}/pause",
    name="pause",
    summary="Pause automatic failover and switchover",
    responses=error_responses(403, 404, 409, 413, 422),
)
async def pause(
    cluster: ClusterPath,
    facade: Maintenance,
    principal: Operator,
    body: Annotated[PauseRequest | None, Body()] = None,
) -> PauseAnswer:
    request = body if body is not None else PauseRequest()
    return await facade.pause(cluster, principal.actor, request.reason, request.end())


@mutations.post(
    "/clusters/{cluster}/resume",
    name="resume",
    summary="Resume automatic failover and switchover",
    responses=error_responses(403, 404, 409, 413, 422),
)
async def resume(
    cluster: ClusterPath,
    facade: Maintenance,
    principal: Operator,
    body: Annotated[ReasonRequest | None, Body()] = None,
) -> PauseAnswer:
    request = body if body is not None else ReasonRequest()
    return await facade.resume_cluster(cluster, principal.actor, request.reason)


@mutations.post(
    "/clusters/{cluster}/nodes/{node}/standby",
    name="standby",
    summary="Keep a node from being chosen as a target",
    responses=error_responses(403, 404, 409, 413, 422),
)
async def standby(
    cluster: ClusterPath,
    node: NodePath,
    facade: Maintenance,
    principal: Operator,
    body: Annotated[ReasonRequest | None, Body()] = None,
) -> StandbyAnswer:
    request = body if body is not None else ReasonRequest()
    return await facade.set_standby(cluster, node, True, principal.actor, request.reason)


@mutations.post(
    "/clusters/{cluster}/nodes/{node}/unstandby",
    name="unstandby",
    summary="Let a node be chosen as a target again",
    responses=error_responses(403, 404, 409, 413, 422),
)
async def unstandby(
    cluster: ClusterPath,
    node: NodePath,
    facade: Maintenance,
    principal: Operator,
    body: Annotated[ReasonRequest | None, Body()] = None,
) -> StandbyAnswer:
    request = body if body is not None else ReasonRequest()
    return await facade.set_standby(cluster, node, False, principal.actor, request.reason)
