"""``/api/v1/alerts`` and ``/api/v1/silences``: what fires, an operator's acknowledgement,
silences (issue 19). Reading needs a viewer; acknowledging, silencing and unsilencing an
operator, each audited.

``GET /alerts?state=firing`` (the default) lists every alert whose condition still holds,
acknowledged ones included (each with its ``state``); ``state=acknowledged`` only those,
``state=cleared`` the last cleared ones (500 per cluster are kept).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Protocol, cast
from urllib.parse import quote

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response, status
from pydantic import AwareDatetime, Field, field_validator, model_validator

from tandem.events.catalog.alerts import SILENCE_LABELS
from tandem.events.catalog.vocabulary import Severity
from tandem.events.names import ClusterName, check_name
from tandem.orchestrator.alert_views import AlertDetail, SilenceView
from tandem.orchestrator.alerts import AlertFilter
from tandem.orchestrator.api.audit import AuditedRoute
from tandem.orchestrator.api.deps import (
    MAX_BODY_BYTES,
    PREFIX,
    Operator,
    RequestBody,
    Viewer,
    get_facade,
)
from tandem.orchestrator.api.errors import error_responses

#: The longest silence asked with ``for_s`` (a year); give ``ends_at`` for a longer one.
MAX_SILENCE_S = 365 * 24 * 3600.0
MAX_ALERTS = 5000

router = APIRouter(prefix=PREFIX, tags=["alerts"])
mutations = APIRouter(
    prefix=PREFIX, tags=["alerts"], route_class=AuditedRoute, max_body_size=MAX_BODY_BYTES
)

FingerprintPath = Annotated[
    str, Path(description="The alert's fingerprint", min_length=1, max_length=64)
]
SilencePath = Annotated[str, Path(description="The silence's id", min_length=1, max_length=64)]
Comment = Annotated[str, Field(max_length=500, description="Why; kept in the event and the audit")]


class AlertFacade(Protocol):
    def list_alerts(
        self, state: AlertFilter, cluster: str | None, limit: int
    ) -> list[AlertDetail]: ...

    def alert(self, fingerprint: str) -> AlertDetail: ...

    def list_silences(self, include_ended: bool) -> list[SilenceView]: ...

    async def acknowledge_alert(
        self, fingerprint: str, actor: str, comment: str
    ) -> AlertDetail: ...

    async def create_silence(
        self, matchers: dict[str, str], ends_at: datetime, actor: str, comment: str
    ) -> SilenceView: ...

    async def remove_silence(self, silence_id: str, actor: str) -> SilenceView: ...


def get_alerts(request: Request) -> AlertFacade:
    return cast(AlertFacade, get_facade(request))


Alerts = Annotated[AlertFacade, Depends(get_alerts)]


class AckRequest(RequestBody):
    comment: Comment = ""


class SilenceRequest(RequestBody):
    """Mute the notifications of the alerts that have every one of ``matchers`` (label ->
    value, ``"*"`` any value), for ``for_s`` seconds or until ``ends_at``."""

    matchers: dict[str, str] = Field(
        min_length=1, description=f"Label -> value; labels: {', '.join(SILENCE_LABELS)}"
    )
    for_s: float | None = Field(
        default=None, gt=0, le=MAX_SILENCE_S, description="How long, in seconds"
    )
    ends_at: AwareDatetime | None = Field(default=None, description="When it ends (with a zone)")
    comment: Comment = ""

    @field_validator("matchers")
    @classmethod
    def _known_labels(cls, matchers: dict[str, str]) -> dict[str, str]:
        for label, value in matchers.items():
            if label not in SILENCE_LABELS:
                raise ValueError(
                    f"unknown label {label!r}: a silence matches on {', '.join(SILENCE_LABELS)}"
                )
            if not value or len(value) > 200:
                raise ValueError(f"{label}: give a value of 1 to 200 characters ('*' is any)")
            if label == "cluster" and value != "*":
                check_name(value, "cluster name")  # an InvalidNameError is a ValueError
            if label == "severity" and value not in {*Severity, "*"}:
                raise ValueError(f"severity {value!r}: one of {', '.join(Severity)} or '*'")
        return matchers

    @model_validator(mode="after")
    def _one_end(self) -> SilenceRequest:
        if (self.for_s is None) == (self.ends_at is None):
            raise ValueError("give for_s or ends_at (a silence always ends), not both")
        if self.ends_at is not None and self.ends_at <= datetime.now(UTC):
            raise ValueError(f"ends_at {self.ends_at.isoformat()} has passed")
        return self

    def end(self) -> datetime:
        if self.for_s is not None:
            return datetime.now(UTC) + timedelta(seconds=self.for_s)
        assert self.ends_at is not None
        return self.ends_at


@router.get(
    "/alerts",
    summary="Alerts, newest first: firing (acknowledged ones too), acknowledged or cleared",
    responses=error_responses(404, 422),
)
async def list_alerts(
    alerts: Alerts,
    _: Viewer,
    state: Annotated[
        AlertFilter,
        Query(description="firing: every one still firing, acknowledged or not"),
    ] = "firing",
    cluster: Annotated[ClusterName | None, Query(description="Only this cluster's")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_ALERTS, description="At most this many")] = 1000,
) -> list[AlertDetail]:
    return alerts.list_alerts(state, cluster, limit)


@router.get("/alerts/{fingerprint}", summary="One alert", responses=error_responses(404))
async def get_alert(fingerprint: FingerprintPath, alerts: Alerts, _: Viewer) -> AlertDetail:
    return alerts.alert(fingerprint)


@router.get("/silences", summary="Silences in force, newest first", responses=error_responses())
async def list_silences(
    alerts: Alerts,
    _: Viewer,
    include_ended: Annotated[
        bool, Query(alias="all", description="Also the ended ones still kept")
    ] = False,
) -> list[SilenceView]:
    return alerts.list_silences(include_ended)


@mutations.post(
    "/alerts/{fingerprint}/ack",
    name="alert_ack",
    summary="Acknowledge a firing alert (it fires until its condition ends)",
    responses=error_responses(403, 404, 409, 413, 422),
)
async def acknowledge(
    fingerprint: FingerprintPath,
    alerts: Alerts,
    principal: Operator,
    body: Annotated[AckRequest | None, Body()] = None,
) -> AlertDetail:
    request = body if body is not None else AckRequest()
    return await alerts.acknowledge_alert(fingerprint, principal.actor, request.comment)


@mutations.post(
    "/silences",
    name="silence",
    summary="Mute the notifications of matching alerts until it ends",
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(403, 409, 413, 422),
)
async def create_silence(
    body: SilenceRequest, alerts: Alerts, principal: Operator, response: Response
) -> SilenceView:
    silence = await alerts.create_silence(body.matchers, body.end(), principal.actor, body.comment)
    response.headers["Location"] = f"{PREFIX}/silences/{quote(silence.id, safe='')}"
    return silence


@mutations.delete(
    "/silences/{silence_id}",
    name="unsilence",
    summary="End a silence before its time",
    responses=error_responses(403, 404, 409),
)
async def remove_silence(
    silence_id: SilencePath, alerts: Alerts, principal: Operator
) -> SilenceView:
    return await alerts.remove_silence(silence_id, principal.actor)
