"""Enumerations shared by the catalog: the words of DESIGN.md as types."""

from __future__ import annotations

from enum import StrEnum


class Identity(StrEnum):
    """A node's fixed place in its cluster."""

    PRIMARY = "primary"
    SECONDARY = "secondary"
    TERTIARY = "tertiary"


class Role(StrEnum):
    """What a node does now."""

    ACTIVE = "active"
    PASSIVE = "passive"


class HealthStatus(StrEnum):
    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"
    UNKNOWN = "unknown"


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class SagaKind(StrEnum):
    SWITCHOVER = "switchover"
    FAILOVER = "failover"
    GROUP_SWITCHOVER = "group_switchover"
    GROUP_FAILOVER = "group_failover"


class ReplicaState(StrEnum):
    IN_SYNC = "in_sync"
    SYNCING = "syncing"
    OUT_OF_SYNC = "out_of_sync"
    PAUSED = "paused"


class VmAction(StrEnum):
    RESTART_GUEST = "restart_guest"
    RESET = "reset"
    VMOTION = "vmotion"
    STORAGE_VMOTION = "storage_vmotion"
