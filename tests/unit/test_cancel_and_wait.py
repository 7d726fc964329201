"""A task that loses its cancellation (as ``asyncio.wait_for`` can on Python 3.11 when the
awaited operation completes at the same moment) is cancelled again until it ends: a side of
the replicator that ran on after its stop kept a node from switching sides for good."""

from __future__ import annotations

import asyncio
import logging

import pytest

from tandem.events.cancel import cancel_and_wait


async def test_a_task_that_swallowed_its_cancellation_is_cancelled_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    turns = []

    async def swallows_once() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            turns.append("swallowed")  # what a lost cancellation looks like from outside
        await asyncio.sleep(60)
        turns.append("never here")

    task = asyncio.create_task(swallows_once())
    await asyncio.sleep(0)
    with caplog.at_level(logging.ERROR):
        await asyncio.wait_for(cancel_and_wait(task, "the stubborn side", every_s=0.05), 10)
    assert task.cancelled() and turns == ["swallowed"]
    assert "the stubborn side still runs" in caplog.text


async def test_a_task_that_ends_with_an_error_is_waited_for_without_raising_it() -> None:
    async def fails() -> None:
        try:
            await asyncio.sleep(60)
        finally:
            raise RuntimeError("its own failure, said where it is handled")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    await cancel_and_wait(task, "a failing side", every_s=0.05)
    assert task.done() and isinstance(task.exception(), RuntimeError)
