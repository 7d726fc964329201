"""``/api/v1/clusters/{c}/nodes/{n}/reinstate``, ``/api/v1/clusters/{c}/cleanup`` and
``/api/v1/clusters/{c}/apps/{action}``: an operator's control of nodes. Operator only, each
audited (``OperatorActionRecorded``); 404 unknown cluster, node or application, 409 with the
reason when the state does not allow it (reinstate the Active, a saga runs...)."""

from __future__ import annotations

from typing import Annotated, Protocol, cast

from fastapi import APIRouter, Body, Depends, Path, Request
from pydantic import Field

from tandem.events.catalog.node_control import AppAction
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
from tandem.orchestrator.nodectl import AppControlAnswer, CleanupAnswer, ReinstateAnswer

mutations = APIRouter(
    prefix=PREFIX, tags=["nodes"], route_class=AuditedRoute, max_body_size=MAX_BODY_BYTES
)

ClusterPath = Annotated[ClusterName, Path(description="The cluster's name")]
NodePath = Annotated[NodeName, Path(description="The node's name")]
ActionPath = Annotated[AppAction, Path(description="stop, start or restart")]


class NodeControlFacade(Protocol):
    async def reinstate(
        self, cluster: str, node: str, actor: str, reason: str
    ) -> ReinstateAnswer: ...

    async def cleanup(
        self, cluster: str, node: str | None, actor: str, reason: str
    ) -> CleanupAnswer: ...

    async def control_apps(
        self, cluster: str, action: AppAction, app: str | None, actor: str, reason: str
    ) -> AppControlAnswer: ...


def get_node_control(request: Request) -> NodeControlFacade:
    return cast(NodeControlFacade, get_facade(request))


NodeControl = Annotated[NodeControlFacade, Depends(get_node_control)]


class ReinstateRequest(RequestBody):
    reason: Reason = DEFAULT_REASON


class CleanupRequest(RequestBody):
    node: NodeName | None = Field(default=None, description="One node (default: every node)")
    reason: Reason = DEFAULT_REASON


class AppRequest(RequestBody):
    app: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="One application (default: every application of the Active)",
    )
    reason: Reason = DEFAULT_REASON


@mutations.post(
    "/clusters/{cluster}/nodes/{node}/reinstate",
    name="reinstate",
    summary="Verify and synchronize a node left behind as a Passive; replication resumes",
    responses=error_responses(403, 404, 409, 413, 422),
)
async def reinstate(
    cluster: ClusterPath,
    node: NodePath,
    facade: NodeControl,
    principal: Operator,
    body: Annotated[ReinstateRequest | None, Body()] = None,
) -> ReinstateAnswer:
    request = body if body is not None else ReinstateRequest()
    return await facade.reinstate(cluster, node, principal.actor, request.reason)


@mutations.post(
    "/clusters/{cluster}/cleanup",
    name="cleanup",
    summary="Clear stale fences, awaiting nodes and operator alerts; reset restart ladders",
    responses=error_responses(403, 404, 409, 413, 422),
)
async def cleanup(
    cluster: ClusterPath,
    facade: NodeControl,
    principal: Operator,
    body: Annotated[CleanupRequest | None, Body()] = None,
) -> CleanupAnswer:
    request = body if body is not None else CleanupRequest()
    return await facade.cleanup(cluster, request.node, principal.actor, request.reason)


@mutations.post(
    "/clusters/{cluster}/apps/{action}",
    name="apps",
    summary="Stop, start or restart applications on the Active",
    responses=error_responses(403, 404, 409, 413, 422),
)
async def apps(
    cluster: ClusterPath,
    action: ActionPath,
    facade: NodeControl,
    principal: Operator,
    body: Annotated[AppRequest | None, Body()] = None,
) -> AppControlAnswer:
    request = body if body is not None else AppRequest()
    return await facade.control_apps(cluster, action, request.app, principal.actor, request.reason)
