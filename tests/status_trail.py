"""What ``tandem status`` said during a test, beside what a client saw at the same moment.

A background task reads the cluster's service status through the REST API and probes the
public endpoint (``probe``: True when a client got an answer) a few times a second; the
trail keeps each change of (service, reason, probe). A test then asserts on the outside
world and on what the status said about it, and logs the trail as a table."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from orchestrator_rig import Pair, cluster_view

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Seen:
    at: float  # time.time()
    service: str
    reason: str
    answered: bool


@dataclass
class StatusTrail:
    pair: Pair
    #: True when a client got an answer now: blocking (run in a thread) or a coroutine.
    probe: Callable[[], bool | Awaitable[bool]]
    every_s: float = 0.25
    seen: list[Seen] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> StatusTrail:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        log.info("status trail:\n%s", self.table())

    async def _run(self) -> None:
        while True:
            try:
                view = await cluster_view(self.pair)
                service, reason = view["service"], view["service_reason"]
            except Exception as exc:  # the API itself away: said as such
                service, reason = "unknown", f"API: {type(exc).__name__}"
            if inspect.iscoroutinefunction(self.probe):
                answered = bool(await self.probe())
            else:
                answered = bool(await asyncio.to_thread(self.probe))
            now = Seen(time.time(), service, reason, answered)
            last = self.seen[-1] if self.seen else None
            if last is None or (last.service, last.reason, last.answered) != (
                now.service, now.reason, now.answered,
            ):  # fmt: skip
                self.seen.append(now)
            await asyncio.sleep(self.every_s)

    def says(self, reason: str, *, answered: bool | None = None) -> bool:
        """Whether the last thing seen has ``reason`` in it (and the client answered, or
        not, when ``answered`` is given)."""
        last = self.seen[-1] if self.seen else None
        if last is None or reason not in last.reason:
            return False
        return answered is None or last.answered is answered

    def since(self, when: float) -> list[Seen]:
        return [s for s in self.seen if s.at >= when]

    def table(self) -> str:
        if not self.seen:
            return "(nothing seen)"
        t0 = self.seen[0].at
        rows = [f"{s.at - t0:7.2f}s  client {'ok  ' if s.answered else 'FAIL'}  "
                f"{s.service:<14} {s.reason}" for s in self.seen]  # fmt: skip
        return "\n".join(rows)


def after_loss(seen: list[Seen], new_active: str) -> str:
    """'' when what the status said after a loss kept its promise: it said down at some
    point, and from then on never serving by anyone but ``new_active``; else what broke."""
    downs = [i for i, s in enumerate(seen) if s.service == "down"]
    if not downs:
        return "the status never said down"
    for s in seen[downs[0] :]:
        if s.service in ("serving", "degraded") and f"{new_active} serves" not in s.reason:
            return f"after down, {s.service}: {s.reason}"
    return ""
