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


#: update_failed: a move after a role change failed; update_missing: an agent waiting to
#: expose got no confirmation; stale: a reconcile found the name not pointing at the Active
#: and could not move it.
DnsProblem = Literal["update_failed", "update_missing", "stale"]


def dns_alert_code(problem: DnsProblem, name: str) -> str:
    """One alert code per DR name and problem, whoever raises it: the dns_updater (the update
    failed, or a reconcile could not repair the name) or an agent waiting to expose (failed,
    or no confirmation in time). The dns_updater clears them all once the name is right.
    E.g. ``dns.update_failed.erp.example.net``.
    """
    return f"dns.{problem}.{name.strip().rstrip('.').lower()}"
