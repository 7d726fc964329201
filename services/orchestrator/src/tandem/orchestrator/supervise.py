"""Keeping the orchestrator's loops alive across bus faults.

A loop (the state projection, liveness, the leader lease, decisions, the outbox) that ends
with an error is started again with backoff, its reason logged once per run of failures; a
bus error never ends the process. Only a ``SettingsError`` (a configuration problem) goes
through, so that the service exits 2 with the reason.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from tandem.events.settings import SettingsError
from tandem.orchestrator.publishing import describe

log = logging.getLogger(__name__)


async def supervise(
    what: str,
    run: Callable[[], Awaitable[object]],
    *,
    first_backoff_s: float = 0.2,
    max_backoff_s: float = 5.0,
    healthy_after_s: float = 30.0,
) -> None:
    """Run ``run()`` for ever: started again after it fails (or returns)."""
    loop = asyncio.get_running_loop()
    delay, failures = first_backoff_s, 0
    while True:
        started = loop.time()
        try:
            await run()
            reason = "it returned"
        except asyncio.CancelledError:
            raise
        except SettingsError:
            raise
        except Exception as exc:
            reason = describe(exc)
        if loop.time() - started >= healthy_after_s:
            delay, failures = first_backoff_s, 0  # it ran well for a while: a new failure
        failures += 1
        if failures == 1:
            log.warning("%s stopped (%s); starting it again", what, reason)
        else:
            log.debug("%s stopped again (%s); restart %s in %.1fs", what, reason, failures, delay)
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_backoff_s)


class SayOnce:
    """Log a failure once per run of the same failure; its end once at info."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self.log = logger
        self.what = what
        self.failing = ""

    def failed(self, reason: str) -> None:
        if reason != self.failing:
            self.log.warning("%s: %s", self.what, reason)
        self.failing = reason

    def ok(self) -> None:
        if self.failing:
            self.log.info("%s: working again", self.what)
        self.failing = ""
