"""``keep_running`` restarts a part that a bus fault ended, on Python's real asyncio: also when
the fault came out of a TaskGroup, which in 3.11 leaves the task marked as being cancelled
(a node agent's replicator once ended silently that way)."""

from __future__ import annotations

import asyncio

import nats.errors
import pytest

from tandem.events.cancel import raise_if_cancelled
from tandem.events.transient import keep_running


async def test_a_part_ended_by_a_bus_fault_in_a_task_group_runs_again() -> None:
    runs = 0

    async def fail_soon() -> None:
        await asyncio.sleep(0.01)
        raise nats.errors.TimeoutError

    async def part() -> None:
        nonlocal runs
        runs += 1
        raise_if_cancelled()  # as the parts' own loops do
        if runs < 3:
            async with asyncio.TaskGroup() as group:
                group.create_task(fail_soon())
                group.create_task(asyncio.sleep(1))

    await asyncio.wait_for(keep_running("part", part, first_backoff_s=0.01), 10)
    assert runs == 3


async def test_a_part_that_crashes_for_another_reason_is_not_restarted() -> None:
    async def part() -> None:
        raise ValueError("a bug")

    with pytest.raises(ValueError):
        await keep_running("part", part, first_backoff_s=0.01)
