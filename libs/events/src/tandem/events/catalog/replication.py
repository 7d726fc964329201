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


class JournalBatchRefusedPayload(Payload):
    batch_epoch: int = Field(ge=0)
    seq: int = Field(ge=0)
    reason: str


@event_type
class JournalBatchRefused(Event):
    """A target refused a journal batch (older epoch, path outside the protected root...)."""

    type: Literal["JournalBatchRefused"] = "JournalBatchRefused"
    version: Literal[1] = 1
    payload: JournalBatchRefusedPayload


class VerifyStartedPayload(Payload):
    target: NodeName
    reason: str


@event_type
class VerifyStarted(Event):
    type: Literal["VerifyStarted"] = "VerifyStarted"
    version: Literal[1] = 1
    payload: VerifyStartedPayload


class VerifyCompletedPayload(Payload):
    target: NodeName
    files_checked: int = Field(ge=0)
    files_changed: int = Field(ge=0)
    bytes_sent: int = Field(ge=0)
    ok: bool
    reason: str


@event_type
class VerifyCompleted(Event):
    type: Literal["VerifyCompleted"] = "VerifyCompleted"
    version: Literal[1] = 1
    payload: VerifyCompletedPayload
