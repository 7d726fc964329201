"""A guard for loops around nats-py's timed waits on Python 3.11.

``asyncio.wait_for`` in 3.11 can lose a cancellation when the awaited operation completes at
the same moment (nats-py's ``next_msg(timeout=)`` and ``fetch(timeout=)`` use it). A loop
reading a busy subscription then never sees its ``CancelledError`` and runs on for ever: a
service that does not stop on SIGTERM. Loops call ``raise_if_cancelled()`` once per turn.
"""

from __future__ import annotations

import asyncio


def raise_if_cancelled() -> None:
    """Raise ``CancelledError`` if the current task was asked to stop (even if a timed wait
    swallowed the request)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def cancel_and_wait(
    task: asyncio.Task[object], what: str, every_s: float = 5.0, log: object = None
) -> None:
    """Cancel ``task`` and wait until it has ended, cancelling it again every ``every_s``
    while it runs on: a cancellation lost in a timed wait (above) must not leave the caller
    waiting for good (chaos s086: a replicator whose source side never ended could not
    become a target, nor the source again). Its outcome is not raised here; the caller's own
    cancellation is."""
    import logging

    logger = log if isinstance(log, logging.Logger) else logging.getLogger(__name__)
    task.cancel()
    tries = 1
    while not task.done():
        await asyncio.wait({task}, timeout=every_s)
        if not task.done():
            tries += 1
            logger.error(
                "%s still runs %.0fs after it was cancelled (a lost cancellation): "
                "cancelling it again (%d)", what, every_s * (tries - 1), tries,
            )  # fmt: skip
            task.cancel()
    if not task.cancelled():
        task.exception()  # retrieved: said by whoever handled it, not "never retrieved"
