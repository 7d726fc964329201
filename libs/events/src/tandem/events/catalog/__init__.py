"""The catalog of Tandem's events and commands. Importing it registers every type."""

from tandem.events.catalog.alerts import (
    AlertAcknowledged,
    AlertCleared,
    AlertRaised,
    SilenceCreated,
    SilenceRemoved,
)
from tandem.events.catalog.commands import (
    ApplyReceiveQueue,
    DrainSendQueue,
    Expose,
    Hide,
    Ping,
    StartApplications,
    StartIntercepting,
    StopApplications,
    StopIntercepting,
    VerifyReplica,
)
from tandem.events.catalog.dns import DnsUpdated, DnsUpdateFailed
from tandem.events.catalog.dns_reconcile import (
    DnsReconcileCompleted,
    DnsReconcileRequested,
    DnsRecordReconciled,
)
from tandem.events.catalog.execution import CommandExecuted
from tandem.events.catalog.fencing import VmFenced, VmFenceFailed, VmFenceRequested
from tandem.events.catalog.health import (
    ApplicationRestarted,
    HealthChanged,
    NetworkIsolated,
    NetworkReachabilityChanged,
    RuleBreached,
)
from tandem.events.catalog.maintenance import (
    ClusterPaused,
    ClusterResumed,
    NodeStandbyChanged,
)
from tandem.events.catalog.node_control import (
    CleanUpNode,
    ControlApplications,
    NodeCleanedUp,
    NodeReinstated,
    ReinstateReplica,
)
from tandem.events.catalog.notifications import NotificationDelivered, NotificationFailed
from tandem.events.catalog.operations import (
    FailoverRecommendationWithdrawn,
    FailoverRecommended,
    FailoverRequested,
    OperatorActionRecorded,
    SwitchoverRequested,
)
from tandem.events.catalog.replication import (
    ReplicaRejectedBatch,
    ReplicationStarted,
    ReplicationStateChanged,
    SyncCompleted,
    SyncProgress,
    SyncStarted,
)
from tandem.events.catalog.roles import (
    HeartbeatLost,
    HeartbeatRestored,
    NodeRoleAssumed,
    NodeSelfFenced,
    NodeUnfenced,
    RoleChanged,
)
from tandem.events.catalog.saga_control import SagaCancelRequested, SagaResumeRequested
from tandem.events.catalog.sagas import (
    SagaCompleted,
    SagaFailed,
    SagaStarted,
    SagaStepCompleted,
    SagaStepFailed,
    SagaStepStarted,
)
from tandem.events.catalog.services import ServiceStarted, ServiceStopped
from tandem.events.catalog.vmware import (
    ApplicationRestartRequested,
    VmRemediationCompleted,
    VmRemediationFailed,
    VmRemediationRequested,
    VmRemediationStarted,
)

__all__ = [
    "AlertAcknowledged",
    "AlertCleared",
    "AlertRaised",
    "ApplicationRestartRequested",
    "ApplicationRestarted",
    "ApplyReceiveQueue",
    "CleanUpNode",
    "ClusterPaused",
    "ClusterResumed",
    "CommandExecuted",
    "ControlApplications",
    "DnsReconcileCompleted",
    "DnsReconcileRequested",
    "DnsRecordReconciled",
    "DnsUpdateFailed",
    "DnsUpdated",
    "DrainSendQueue",
    "Expose",
    "FailoverRecommendationWithdrawn",
    "FailoverRecommended",
    "FailoverRequested",
    "HealthChanged",
    "HeartbeatLost",
    "HeartbeatRestored",
    "Hide",
    "NetworkIsolated",
    "NetworkReachabilityChanged",
    "NodeCleanedUp",
    "NodeReinstated",
    "NodeRoleAssumed",
    "NodeSelfFenced",
    "NodeStandbyChanged",
    "NodeUnfenced",
    "NotificationDelivered",
    "NotificationFailed",
    "OperatorActionRecorded",
    "Ping",
    "ReinstateReplica",
    "ReplicaRejectedBatch",
    "ReplicationStarted",
    "ReplicationStateChanged",
    "RoleChanged",
    "RuleBreached",
    "SagaCancelRequested",
    "SagaCompleted",
    "SagaFailed",
    "SagaResumeRequested",
    "SagaStarted",
    "SagaStepCompleted",
    "SagaStepFailed",
    "SagaStepStarted",
    "ServiceStarted",
    "ServiceStopped",
    "SilenceCreated",
    "SilenceRemoved",
    "StartApplications",
    "StartIntercepting",
    "StopApplications",
    "StopIntercepting",
    "SwitchoverRequested",
    "SyncCompleted",
    "SyncProgress",
    "SyncStarted",
    "VerifyReplica",
    "VmFenceFailed",
    "VmFenceRequested",
    "VmFenced",
    "VmRemediationCompleted",
    "VmRemediationFailed",
    "VmRemediationRequested",
    "VmRemediationStarted",
]
