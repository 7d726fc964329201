"""Replication status as reported by the replicator on each node."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tandem.events.catalog.vocabulary import ReplicaState
from tandem.events.envelope import Event, Payload
from tandem.events.names import NodeName
from tandem.events.registry import event_type


class ReplicationStateChangedPayload(Payload):
    target: NodeName
    state: ReplicaState
    applied_seq: int = Field(ge=0)
    lag_ops: int = Field(ge=0)
    lag_bytes: int = Field(ge=0)
    reason: str


@event_type
class ReplicationStateChanged(Event):
    type: Literal["ReplicationStateChanged"] = "ReplicationStateChanged"
    version: Literal[1] = 1
    payload: ReplicationStateChangedPayload


class ReplicaRejectedBatchPayload(Payload):
    batch_epoch: int = Field(ge=0)
    seq: int = Field(ge=0)
    reason: str
    #: An older epoch's batch, skipped: expected after a role change (the old Active's last
    #: batches), acknowledged and not dead-lettered. False: refused as unusable (dead-lettered).
    stale: bool = False


@event_type
class ReplicaRejectedBatch(Event):
    """A target refused a journal batch: corrupt, a path outside the root (dead-lettered), or
    of an older epoch (``stale``: skipped, an expected outcome of a role change)."""

    type: Literal["ReplicaRejectedBatch"] = "ReplicaRejectedBatch"
    version: Literal[1] = 1
    payload: ReplicaRejectedBatchPayload


class SyncStartedPayload(Payload):
    target: NodeName
    reason: str


@event_type
class SyncStarted(Event):
    """Verify & synchronize began for a target."""

    type: Literal["SyncStarted"] = "SyncStarted"
    version: Literal[1] = 1
    payload: SyncStartedPayload


class SyncProgressPayload(Payload):
    target: NodeName
    files_checked: int = Field(ge=0)
    files_total: int = Field(ge=0)
    bytes_sent: int = Field(ge=0)


@event_type
class SyncProgress(Event):
    """Throttled progress of a verify & synchronize."""

    type: Literal["SyncProgress"] = "SyncProgress"
    version: Literal[1] = 1
    payload: SyncProgressPayload


class SyncCompletedPayload(Payload):
    target: NodeName
    files_checked: int = Field(ge=0)
    files_out_of_sync: int = Field(ge=0)
    bytes_sent: int = Field(ge=0)
    ok: bool
    reason: str


@event_type
class SyncCompleted(Event):
    type: Literal["SyncCompleted"] = "SyncCompleted"
    version: Literal[1] = 1
    payload: SyncCompletedPayload


class ReplicationStartedPayload(Payload):
    #: "source" on the Active (capture live), "target" on a Passive (consuming the journal).
    side: Literal["source", "target"]
    root: str
    capture: str
    mode: str
    #: On a source that did not stop cleanly (or starts for the first time): why its
    #: targets may lack some of its data until a verify of each (``SyncCompleted`` ok)
    #: confirms it; empty otherwise.
    unverified_targets: str = ""


@event_type
class ReplicationStarted(Event):
    type: Literal["ReplicationStarted"] = "ReplicationStarted"
    version: Literal[1] = 1
    payload: ReplicationStartedPayload
