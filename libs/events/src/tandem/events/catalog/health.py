"""Application and server health as seen by the monitor."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from tandem.events.catalog.vocabulary import HealthStatus
from tandem.events.envelope import Event, Payload
from tandem.events.registry import event_type


class HealthChangedPayload(Payload):
    application: str | None
    plugin: str
    status: HealthStatus
    previous: HealthStatus | None
    metrics: dict[str, float] = Field(default_factory=dict)
    message: str


@event_type
class HealthChanged(Event):
    """A health check's status changed (only changes are events, not every sample)."""

    type: Literal["HealthChanged"] = "HealthChanged"
    version: Literal[1] = 1
    payload: HealthChangedPayload


class RuleBreachedPayload(Payload):
    rule: str
    metric: str
    #: None when the sample failed (timed out, raised) or lacked the metric.
    value: float | None
    threshold: float
    comparator: str
    consecutive: int = Field(ge=1)
    action: str
    samples: list[dict[str, Any]] = Field(default_factory=list)


@event_type
class RuleBreached(Event):
    type: Literal["RuleBreached"] = "RuleBreached"
    version: Literal[1] = 1
    payload: RuleBreachedPayload


class ApplicationRestartedPayload(Payload):
    application: str
    attempt: int = Field(ge=1)
    ok: bool
    reason: str


@event_type
class ApplicationRestarted(Event):
    type: Literal["ApplicationRestarted"] = "ApplicationRestarted"
    version: Literal[1] = 1
    payload: ApplicationRestartedPayload


class NetworkReachabilityChangedPayload(Payload):
    reachable: list[str]
    unreachable: list[str]
    isolated: bool
    reason: str


@event_type
class NetworkReachabilityChanged(Event):
    """The node's network checks changed; ``isolated`` when every target failed."""

    type: Literal["NetworkReachabilityChanged"] = "NetworkReachabilityChanged"
    version: Literal[1] = 1
    payload: NetworkReachabilityChangedPayload


class NetworkIsolatedPayload(Payload):
    unreachable: list[str]
    reason: str


@event_type
class NetworkIsolated(Event):
    """Every network check target of the node failed: the node is cut off from its network.
    On the Active this leads to a switchover request; a Passive must not become Active."""

    type: Literal["NetworkIsolated"] = "NetworkIsolated"
    version: Literal[1] = 1
    payload: NetworkIsolatedPayload
