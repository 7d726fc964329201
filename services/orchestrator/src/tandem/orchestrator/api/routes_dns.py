"""``/api/v1/dns``: ask the dns_updater to check (and repair) the DR names now."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Response, status
from pydantic import Field

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
)
from tandem.orchestrator.api.errors import error_responses
from tandem.orchestrator.dns_reconcile import BusUnavailable, DnsReconcileAccepted

mutations = APIRouter(
    prefix=PREFIX, tags=["dns"], route_class=AuditedRoute, max_body_size=MAX_BODY_BYTES
)


class DnsReconcileRequest(RequestBody):
    """Check that each DR name of the cluster (or of every cluster) points at its Active,
    and move the ones that do not."""

    cluster: ClusterName | None = Field(default=None, description="null: every cluster")
    reason: Reason = DEFAULT_REASON


@mutations.post(
    "/dns/reconcile",
    name="dns_reconcile",
    summary="Check and repair the DR names now",
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        **error_responses(403, 404, 409, 413, 422),
        503: {"description": "The request could not be stored on the bus"},
    },
)
async def dns_reconcile(
    facade: Facade,
    principal: Operator,
    response: Response,
    body: Annotated[DnsReconcileRequest | None, Body()] = None,
) -> DnsReconcileAccepted:
    """Answers 202 once the request is stored; the dns_updater's answer is the event
    ``DnsReconcileCompleted`` whose correlation id is ``request_id``, after ``seq``."""
    request = body if body is not None else DnsReconcileRequest()
    try:
        accepted = await facade.dns_reconcile(request.cluster, principal.actor, request.reason)
    except BusUnavailable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(exc)) from None
    response.headers["Location"] = accepted.events_url
    return accepted
