"""``GET /api/v1/whoami``: what the caller's token allows (the console shows only that)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from tandem.orchestrator.api.deps import PREFIX, Viewer

router = APIRouter(prefix=PREFIX, tags=["ops"])


class Caller(BaseModel):
    #: viewer, operator or admin.
    role: str
    #: How the audit records name this caller (``<role>:<token fingerprint>``).
    actor: str


@router.get("/whoami", summary="The caller's role")
async def whoami(principal: Viewer) -> Caller:
    return Caller(role=principal.role.label, actor=principal.actor)
