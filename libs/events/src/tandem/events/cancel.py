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
