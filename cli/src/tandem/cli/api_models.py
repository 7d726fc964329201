"""What the orchestrator's REST API answers, as the CLI reads it: local models (a subset of
the orchestrator's views, with enums kept as plain strings) so the CLI never imports the
orchestrator package and tolerates fields and values a newer orchestrator adds.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Node(_Model):
    name: str
    identity: str | None = None
    role: str | None = None
    health: str = "unknown"
    alive: bool = False
    isolated: bool = False
    fenced: bool = False
    fenced_reason: str = ""
    fenced_since: datetime | None = None
    guard_deadline: datetime | None = None
    replication: str | None = None
    #: in_sync / catching_up / out_of_sync / stopped (None on the Active or unknown).
    replica_state: str | None = None
    lag_batches: int = 0
    lag_bytes: int = 0
    lag_oldest_age_s: float | None = None
    awaiting_operator: bool = False
    standby: bool = False
    standby_reason: str = ""
    role_since: datetime | None = None
    heartbeat_age_s: float | None = None
    lease_age_s: float | None = None
    lease_role: str | None = None
    lease_epoch: int | None = None
    failover_mode: str = "automatic"
    #: Where clients reach it while Active (from its lease; None: an older node or no lease).
    public_address: str | None = None


class Alert(_Model):
    code: str
    message: str = ""
    node: str = ""
    raised_at: datetime | None = None
    fingerprint: str = ""
    #: ``firing`` or ``acknowledged`` (an older orchestrator says neither).
    state: str = "firing"


class LastSaga(_Model):
    id: str
    kind: str = ""
    state: str = ""
    reason: str = ""
    started_at: datetime | None = None
    ended_at: datetime | None = None


class PendingFailover(_Model):
    failed_node: str
    to: str
    reason: str = ""
    recommended_at: datetime | None = None


class Maintenance(_Model):
    """A paused cluster (``tandem pause``): no automatic failover or switchover."""

    by: str = ""
    reason: str = ""
    since: datetime | None = None
    until: datetime | None = None


class PauseAnswer(_Model):
    cluster: str
    maintenance: Maintenance | None = None
    message: str = ""


class DnsReconcileAccepted(_Model):
    """A DNS reconcile request stored: the dns_updater's answer comes after ``seq``."""

    request_id: str
    cluster: str | None = None
    seq: int = 0


class EventRecord(_Model):
    seq: int
    id: str
    type: str
    cluster: str = ""
    node: str = ""
    correlation_id: str | None = None
    payload: dict[str, Any] = Field(default_factory=dict)


class StandbyAnswer(_Model):
    cluster: str
    node: str
    standby: bool
    reason: str = ""
    message: str = ""
    #: Set when no node is left to take over.
    note: str = ""


class Cluster(_Model):
    name: str
    active: str | None = None
    epoch: int = 0
    nodes: list[Node] = Field(default_factory=list)
    saga: str | None = None
    pending_failover: PendingFailover | None = None
    health: str = "unknown"
    #: serving / degraded / down / needs_operator ("unknown": an orchestrator too old to say).
    service: str = "unknown"
    service_reason: str = ""
    maintenance: Maintenance | None = None
    alerts: list[Alert] = Field(default_factory=list)
    last_saga: LastSaga | None = None


class SagaStep(_Model):
    index: int
    name: str
    node: str = ""
    command: str = ""
    state: str = "pending"
    reason: str = ""


class Saga(_Model):
    id: str
    kind: str = ""
    cluster: str = ""
    from_node: str | None = None
    to_node: str | None = None
    state: str = "running"
    reason: str = ""
    steps: list[SagaStep] = Field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.state in ("completed", "failed", "needs_operator")


class GroupMember(_Model):
    cluster: str
    priority: int = 0
    depends_on: list[str] = Field(default_factory=list)
    active: str | None = None
    health: str = "unknown"
    service: str = "unknown"
    service_reason: str = ""


class Group(_Model):
    name: str
    members: list[GroupMember] = Field(default_factory=list)
    health: str = "unknown"
    service: str = "unknown"
    service_reason: str = ""
    saga: str | None = None


class Accepted(_Model):
    saga_id: str
    status_url: str = ""


class GroupAccepted(Accepted):
    """A group switchover's answer; a directed one also names the members skipped."""

    to: str | None = None
    #: Member cluster -> why the saga leaves it where it is (already Active there).
    skipped: dict[str, str] = Field(default_factory=dict)
