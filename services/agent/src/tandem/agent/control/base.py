"""What every kind of application control offers: start, stop and status."""

from __future__ import annotations

from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel, ConfigDict


class AppState(StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"
    FAILED = "failed"
    # The control could not tell (a transition in progress, or the query itself failed).
    UNKNOWN = "unknown"


class AppStatus(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    state: AppState
    pid: int | None = None
    message: str = ""


class ControlError(Exception):
    """An action could not be carried out; ``message`` says why in words an operator can use."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ServiceControl(Protocol):
    """Start, stop and observe one application.

    ``start`` and ``stop`` are idempotent: starting a running application or stopping a stopped
    one succeeds and says so in the status message. When the action cannot be done they raise
    ``ControlError``. ``status`` does not raise for an application it cannot observe: it answers
    ``AppState.UNKNOWN`` with the reason, because the monitor polls it and must keep going.
    """

    async def start(self) -> AppStatus: ...

    async def stop(self) -> AppStatus: ...

    async def status(self) -> AppStatus: ...
