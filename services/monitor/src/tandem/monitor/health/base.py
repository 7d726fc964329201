"""The one interface every health plugin implements, and the timeout wrapper around it.

A plugin answers ``check() -> Sample``. The monitor never trusts a plugin to return in
time or without raising: ``sample_within`` turns a hang into a failed sample after the
plugin's timeout and an exception into a failed sample carrying the error message, so the
monitoring loop always goes on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from tandem.events.catalog.vocabulary import HealthStatus

log = logging.getLogger(__name__)


class Sample(BaseModel):
    """One observation of one check: a status, named numbers, and a sentence for a person."""

    model_config = ConfigDict(frozen=True)

    status: HealthStatus
    metrics: dict[str, float] = Field(default_factory=dict)
    message: str
    #: False when the plugin did not answer properly (timed out or raised).
    completed: bool = True
    taken_at: float = Field(default_factory=time.time)


class HealthPlugin(Protocol):
    """A check. ``kind`` is the plugin's name (``tcp``, ``http``, ...)."""

    kind: str

    async def check(self) -> Sample: ...


def failed_sample(message: str) -> Sample:
    return Sample(status=HealthStatus.CRITICAL, message=message, completed=False)


async def sample_within(plugin: HealthPlugin, timeout_s: float) -> Sample:
    """Run one check with a deadline; never raises (except cancellation)."""
    try:
        async with asyncio.timeout(timeout_s):
            return await plugin.check()
    except TimeoutError:
        return failed_sample(f"{plugin.kind} check timed out after {timeout_s:g}s")
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.debug("%s check raised", plugin.kind, exc_info=True)
        return failed_sample(f"{plugin.kind} check failed: {type(exc).__name__}: {exc}")
