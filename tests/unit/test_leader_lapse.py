"""The orchestrator's leader lease: a lapse that starts and ends inside one slow renewal
(the bus electing a leader) is a new term, so the sagas that stopped for it are resumed.
A chaos run saw a switchover stopped "for the next leader" that no leader ever resumed.
The bucket stands in for ``tandem_leases`` (this tests the lease's bookkeeping; the real
bucket is used in tests/integration/test_saga_bus_faults.py)."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from typing import Any

from tandem.orchestrator.leader import LEADER_KEY, LeaderLease


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


class Bucket:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.revision = 0
        self.value = b""
        self.slow_next_s = 0.0
        self.lease: LeaderLease | None = None
        self.seen_mid_write: list[bool] = []

    async def get(self, key: str) -> Any:
        assert key == LEADER_KEY
        if not self.revision:
            from nats.js.errors import KeyNotFoundError

            raise KeyNotFoundError
        return SimpleNamespace(value=self.value, revision=self.revision)

    async def _write(self, value: bytes) -> int:
        if self.slow_next_s:
            self.clock.now += self.slow_next_s  # the renewal takes this long...
            self.slow_next_s = 0.0
            assert self.lease is not None  # ...and a saga asks meanwhile
            self.seen_mid_write.append(self.lease.is_leader())
        self.revision += 1
        self.value = value
        return self.revision

    async def create(self, key: str, value: bytes) -> int:
        return await self._write(value)

    async def update(self, key: str, value: bytes, last: int) -> int:
        assert last == self.revision
        return await self._write(value)


async def test_a_lapse_inside_one_slow_renewal_is_a_new_term() -> None:
    clock = Clock()
    bucket = Bucket(clock)
    elected = []

    async def on_elected() -> None:
        elected.append(clock.now)

    bus = SimpleNamespace(kv=lambda name: asyncio.sleep(0, bucket))
    lease = LeaderLease(
        bus, "orch-1", ttl_s=3.0, renew_every_s=0.5, on_elected=on_elected, clock=clock
    )  # type: ignore[arg-type]
    bucket.lease = lease
    task = asyncio.create_task(lease.run())
    try:
        for _ in range(50):
            if elected:
                break
            await asyncio.sleep(0.01)
        assert len(elected) == 1 and lease.is_leader()
        await asyncio.sleep(0.6)  # a renewal or two at the same clock reading
        clock.now += 2.0  # the next renewal starts in time (still the leader)...
        bucket.slow_next_s = 0.8  # ...but ends past ttl - renew_every: it stopped acting
        for _ in range(200):
            if len(elected) == 2:
                break
            await asyncio.sleep(0.01)
        assert bucket.seen_mid_write == [False], "the saga saw the lapse"
        assert len(elected) == 2, "renewed after a lapse: taken up again"
        assert json.loads(bucket.value)["holder"] == "orch-1"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
