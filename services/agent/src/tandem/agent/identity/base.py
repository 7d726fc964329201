"""What every network identity implementation offers."""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel, ConfigDict


class IdentityStatus(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    exposed: bool
    address: str | None = None
    detail: str = ""


class NetworkIdentity(Protocol):
    """Expose or hide the public identity on this node. ``expose`` and ``hide`` are idempotent:
    exposing an exposed identity or hiding a hidden one succeeds and says so in ``detail``."""

    async def expose(self) -> IdentityStatus: ...

    async def hide(self) -> IdentityStatus: ...

    async def status(self) -> IdentityStatus: ...
