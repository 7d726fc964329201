"""What a node did with a command it was sent (the node-side record of each saga step)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from tandem.events.envelope import Event, Payload
from tandem.events.registry import event_type


class CommandExecutedPayload(Payload):
    command_type: str
    command_id: str
    idempotency_key: str
    ok: bool
    reason: str
    elapsed_s: float = Field(ge=0)


@event_type
class CommandExecuted(Event):
    """A node carried out a command (once per idempotency key), successfully or not."""

    type: Literal["CommandExecuted"] = "CommandExecuted"
    version: Literal[1] = 1
    payload: CommandExecutedPayload
