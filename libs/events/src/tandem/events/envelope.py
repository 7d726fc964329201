"""The envelope every event and command travels in.

Events are facts (past-tense names); commands are requests to a node (imperative names).
Both are frozen pydantic models: a concrete type subclasses ``Event`` or ``Command``, pins
``type`` and ``version`` with ``Literal`` defaults and declares its ``payload`` model.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar, Self

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from tandem.events.ids import new_id
from tandem.events.names import ClusterName, NodeName


def utcnow() -> datetime:
    return datetime.now(UTC)


class Payload(BaseModel):
    """Base of every payload: frozen, and unknown fields are an error, not ignored."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class _Envelope(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    #: "event" or "command"; lets a registry tell the two families apart.
    kind: ClassVar[str]

    id: str = Field(default_factory=new_id, min_length=1, max_length=64)
    type: str
    version: int = Field(ge=1)
    cluster: ClusterName
    node: NodeName
    epoch: int = Field(default=0, ge=0)
    correlation_id: str | None = Field(default=None, max_length=64)
    causation_id: str | None = Field(default=None, max_length=64)
    payload: Payload

    @classmethod
    def type_key(cls) -> tuple[str, int]:
        """(type, version) of a concrete class, read from its ``Literal`` defaults."""
        type_field = cls.model_fields["type"].default
        version_field = cls.model_fields["version"].default
        if not isinstance(type_field, str) or not isinstance(version_field, int):
            raise TypeError(f"{cls.__name__} must pin 'type' and 'version' with defaults")
        return type_field, version_field

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()


class Event(_Envelope):
    """A fact that happened. ``node`` is the node or service instance that observed it."""

    kind: ClassVar[str] = "event"
    occurred_at: AwareDatetime = Field(default_factory=utcnow)

    @field_validator("occurred_at")
    @classmethod
    def _to_utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    def caused(self, cause: Event | Command) -> Self:
        """A copy that belongs to ``cause``'s saga and names it as its cause."""
        return self.model_copy(
            update={
                "correlation_id": cause.correlation_id or cause.id,
                "causation_id": cause.id,
            }
        )


class Command(_Envelope):
    """A request addressed to one node (``node``) of a cluster, fenced by ``epoch``.

    ``idempotency_key`` names the effect: a second command with the same key gets the first
    one's result and is not carried out again.
    """

    kind: ClassVar[str] = "command"
    idempotency_key: str = Field(default_factory=new_id, min_length=1, max_length=128)
    issued_at: AwareDatetime = Field(default_factory=utcnow)


class CommandResult(BaseModel):
    """The answer to a command: ``ok`` with data, or not ok with the reason."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    command_id: str | None
    idempotency_key: str | None
    ok: bool
    reason: str = ""
    data: dict[str, Any] = Field(default_factory=dict)
    #: True when this answer was remembered from an earlier command with the same key.
    replayed: bool = False
