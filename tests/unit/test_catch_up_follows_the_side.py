"""ApplyReceiveQueue waits on whichever target side runs now (chaos run 8, s008): a bus fault
restarts the replicator's target side, and the side that ended never applies again; the
failover's catch-up waited 30 s on it, twice, while the new side had applied everything."""

from __future__ import annotations

import asyncio

import pytest

from tandem.replicator.node import ReplicatorNode
from tandem.replicator.target import TargetSide


class _Loop:
    def __init__(self, applies: bool) -> None:
        self.applies = applies

    async def wait_applied(
        self, upto: tuple[int, int], timeout: float, *, accept_gap: bool = False
    ) -> str:
        if self.applies:
            return ""
        await asyncio.sleep(timeout)
        raise TimeoutError(f"batch {upto} not applied within {timeout}s")


def _side(applies: bool) -> TargetSide:
    side = TargetSide.__new__(TargetSide)  # only its apply loop is asked
    side.loop = _Loop(applies)  # type: ignore[assignment]
    return side


class _Node:
    side: TargetSide | None
    _applied_by_the_target = ReplicatorNode._applied_by_the_target


async def test_the_wait_moves_to_the_side_that_replaced_the_ended_one() -> None:
    node = _Node()
    node.side = _side(applies=False)  # ended by a bus fault: never applies again
    ended = node.side

    async def restart() -> None:
        await asyncio.sleep(0.3)
        node.side = None  # between two runs
        await asyncio.sleep(0.2)
        node.side = _side(applies=True)

    restarting = asyncio.create_task(restart())
    side, gap = await node._applied_by_the_target((9, 38), 10.0)  # type: ignore[arg-type]
    await restarting
    assert side is node.side and side is not ended and gap == ""


async def test_no_side_applying_within_the_budget_is_a_timeout_naming_the_batch() -> None:
    node = _Node()
    node.side = _side(applies=False)
    with pytest.raises(TimeoutError, match=r"batch 9:38 not applied within 1\.5s"):
        await node._applied_by_the_target((9, 38), 1.5)  # type: ignore[arg-type]
