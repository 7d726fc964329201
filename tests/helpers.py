"""Small builders shared by tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

from tandem.events.catalog import AlertRaised
from tandem.events.catalog.alerts import AlertRaisedPayload
from tandem.events.catalog.vocabulary import Severity


def alert(cluster: str = "demo", code: str = "test", n: int = 0, **kw: object) -> AlertRaised:
    return AlertRaised(
        cluster=cluster,
        node="primary",
        payload=AlertRaisedPayload(code=code, severity=Severity.INFO, message=f"message {n}"),
        **kw,  # type: ignore[arg-type]
    )


@contextlib.asynccontextmanager
async def running(work: Coroutine[Any, Any, Any]) -> AsyncIterator[asyncio.Task[Any]]:
    """``work`` runs as a task while the block runs; cancelled and awaited at its end."""
    task = asyncio.create_task(work)
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def eventually(
    check: Callable[[], Awaitable[bool] | bool], timeout: float = 10.0, what: str = "condition"
) -> None:
    """Poll ``check`` until true; fail naming ``what`` after ``timeout`` s (asserts no speed)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = check()
        if isinstance(result, Awaitable):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
