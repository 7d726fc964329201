"""Moves of a DR public name (RFC 2136 updates)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tandem.events.envelope import Event, Payload
from tandem.events.registry import event_type


class DnsUpdatedPayload(Payload):
    name: str
    addresses: list[str] = Field(min_length=1)
    ttl: int = Field(ge=0)
    verified_by: list[str]
    #: How many update attempts it took (None: not recorded, from an older dns_updater).
    attempts: int | None = Field(default=None, ge=1)


@event_type
class DnsUpdated(Event):
    type: Literal["DnsUpdated"] = "DnsUpdated"
    version: Literal[1] = 1
    payload: DnsUpdatedPayload


class DnsUpdateFailedPayload(Payload):
    name: str
    attempts: int = Field(ge=1)
    reason: str


@event_type
class DnsUpdateFailed(Event):
    type: Literal["DnsUpdateFailed"] = "DnsUpdateFailed"
    version: Literal[1] = 1
    payload: DnsUpdateFailedPayload


DnsProblem = Literal["update_failed", "update_missing"]


def dns_alert_code(problem: DnsProblem, name: str) -> str:
    """One alert code per DR name and problem, whoever raises it: the dns_updater (the update
    failed) or an agent waiting to expose (failed, or no confirmation in time). The
    dns_updater clears both when it moves the name. E.g. ``dns.update_failed.erp.example.net``.
    """
    return f"dns.{problem}.{name.strip().rstrip('.').lower()}"
