"""Lifecycle of Tandem's own services."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tandem.events.envelope import Event, Payload
from tandem.events.registry import event_type


class ServiceStartedPayload(Payload):
    service: str = Field(min_length=1)
    version: str
    host: str
    pid: int
    #: Where the service listens, by purpose (e.g. {"api": "http://127.0.0.1:8080"}).
    listen: dict[str, str] = Field(default_factory=dict)


@event_type
class ServiceStarted(Event):
    type: Literal["ServiceStarted"] = "ServiceStarted"
    version: Literal[1] = 1
    payload: ServiceStartedPayload


class ServiceStoppedPayload(Payload):
    service: str = Field(min_length=1)
    reason: str


@event_type
class ServiceStopped(Event):
    type: Literal["ServiceStopped"] = "ServiceStopped"
    version: Literal[1] = 1
    payload: ServiceStoppedPayload
