"""Keeping the orchestrator's loops alive across bus faults.

A loop (the state projection, liveness, the leader lease, decisions, the outbox) that ends
with an error is started again with backoff, its reason logged once per run of failures; a
bus error never ends the process. Only a ``SettingsError`` (a configuration problem) goes
through, so that the service exits 2 with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from tandem.events.settings import SettingsError
from tandem.events.transient import keep_running

log = logging.getLogger(__name__)


async def supervise(what: str, run: Callable[[], Awaitable[object]]) -> None:
    """Run ``run()`` for ever: started again after it fails (or returns)."""
    await keep_running(
        what,
        run,
        restart_if=lambda exc: not isinstance(exc, SettingsError),
        restart_when_done=True,
        first_backoff_s=0.2,
        max_backoff_s=5.0,
        healthy_after_s=30.0,
    )


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
