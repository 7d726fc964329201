"""One cluster's events waiting for its worker, in stream order, and the look ahead that
grouping needs: is the clear of this alert already waiting behind it?"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import deque
from datetime import datetime

from nats.aio.msg import Msg

from tandem.events.catalog import AlertCleared
from tandem.events.envelope import Event
from tandem.notifier.book import now_utc


@dataclasses.dataclass
class Job:
    seq: int
    event: Event
    msg: Msg


class ClusterQueue:
    def __init__(self) -> None:
        self._jobs: deque[Job] = deque()
        self._arrived = asyncio.Event()

    def put(self, job: Job) -> None:
        self._jobs.append(job)
        self._arrived.set()

    async def get(self) -> Job:
        while not self._jobs:
            self._arrived.clear()
            await self._arrived.wait()
        return self._jobs.popleft()

    def clear_waiting(self, fingerprint: str) -> bool:
        return any(
            isinstance(j.event, AlertCleared) and j.event.fingerprint == fingerprint
            for j in self._jobs
        )

    async def cleared_by(self, fingerprint: str, deadline: datetime) -> bool:
        """True as soon as the clear of ``fingerprint`` is waiting; False at ``deadline``."""
        while not self.clear_waiting(fingerprint):
            remaining = (deadline - now_utc()).total_seconds()
            if remaining <= 0:
                return False
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except TimeoutError:
                pass
        return True
