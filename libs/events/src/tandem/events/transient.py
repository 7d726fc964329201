"""Which bus failures pass by themselves, and the one retry loop every service uses for them.

A NATS cluster that loses a node, elects a stream leader or reconnects a client answers for a
few seconds with timeouts, "no responders" or a closed connection: waiting and asking again
is the whole cure. A few failures never pass (a payload over the server's limit, a subject
the server refuses, an event stored in the wrong stream): retrying those would block
everything queued behind them, so they are told apart here, once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import nats.errors
from nats.js.errors import APIError
from pydantic import ValidationError

from tandem.events.errors import CasConflictError, DecodeError, TandemBusError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: JetStream API error codes that are about the request, not the moment it was made.
_PERMANENT_API_CODES = {
    10039,  # the stream's subjects overlap with another stream's
    10054,  # maximum message size exceeded
    10060,  # expected stream does not match
}


def is_transient(exc: BaseException) -> bool:
    """True when asking again later may succeed (timeouts, elections, reconnects)."""
    if isinstance(exc, (nats.errors.MaxPayloadError, nats.errors.BadSubjectError)):
        return False
    if isinstance(exc, (DecodeError, CasConflictError, ValidationError)):
        return False
    if isinstance(exc, APIError):  # nats-py raises some (KeyNotFoundError) with no code
        return getattr(exc, "err_code", None) not in _PERMANENT_API_CODES
    # Our own checks on an answer (e.g. stored in another stream) do not change on a retry.
    return not (isinstance(exc, TandemBusError) and type(exc) is TandemBusError)


def is_bus_fault(exc: BaseException | None) -> bool:
    """True for a passing failure of the bus itself (also when a task group wraps only such
    failures): a part that ended with one can simply be started again."""
    if exc is None:
        return False
    if isinstance(exc, BaseExceptionGroup):
        return all(is_bus_fault(inner) for inner in exc.exceptions)
    bus_kinds = (nats.errors.Error, TimeoutError, ConnectionError)
    return isinstance(exc, bus_kinds) and is_transient(exc)


def forget_stale_cancels() -> None:
    """Python 3.11's TaskGroup cancels its parent task when a child fails while the group is
    already exiting, and never takes that back (``uncancel``): the task that caught the
    group's error would then stop at its next ``raise_if_cancelled``, silently. (A chaos run
    saw a node agent's replicator end that way after a bus fault.) A stop that is really
    pending still arrives: at the next ``await``."""
    task = asyncio.current_task()
    while task is not None and task.cancelling():
        task.uncancel()


def describe(exc: BaseException) -> str:
    """A one-line reason: nats-py's timeouts carry no message of their own."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Backoff:
    """Exponential delays, 0.1 s doubling up to ``max_s``; ``reset`` after a success."""

    def __init__(self, first_s: float = 0.1, max_s: float = 5.0) -> None:
        self.first_s = first_s
        self.max_s = max_s
        self.next_s = first_s

    def reset(self) -> None:
        self.next_s = self.first_s

    async def wait(self) -> None:
        delay, self.next_s = self.next_s, min(self.next_s * 2, self.max_s)
        await asyncio.sleep(delay)


async def retry_transient(
    what: str,
    attempt: Callable[[], Awaitable[T]],
    *,
    deadline_s: float | None = None,
    max_backoff_s: float = 5.0,
    keep_going: Callable[[], bool] | None = None,
) -> T:
    """Call ``attempt`` until it succeeds; transient failures wait and retry.

    Ends with the last error when it is permanent, when ``deadline_s`` (from now) has
    passed, or when ``keep_going()`` turns false. The first failure of a run is logged at
    warning, the rest at debug, and the recovery at info: one outage, two lines.
    """
    loop = asyncio.get_running_loop()
    give_up = None if deadline_s is None else loop.time() + deadline_s
    backoff = Backoff(max_s=max_backoff_s)
    failures = 0
    while True:
        # No raise_if_cancelled() here: a stop's own last words (ServiceStopped, published
        # while the task is being cancelled) go through this loop.
        try:
            result = await attempt()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if not is_transient(exc):
                raise
            failures += 1
            out_of_time = give_up is not None and loop.time() + backoff.next_s > give_up
            if out_of_time or (keep_going is not None and not keep_going()):
                raise
            level = logging.WARNING if failures == 1 else logging.DEBUG
            log.log(level, "%s: bus unavailable (%s); retrying", what, describe(exc))
            await backoff.wait()
            continue
        if failures:
            log.info("%s: done after %s retries", what, failures)
        return result


async def keep_running(
    what: str,
    part: Callable[[], Awaitable[object]],
    *,
    restart_if: Callable[[BaseException], bool] = is_bus_fault,
    restart_when_done: bool = False,
    first_backoff_s: float = 0.5,
    max_backoff_s: float = 10.0,
    healthy_after_s: float = 60.0,
) -> None:
    """Run ``part()`` for ever: when an error ``restart_if`` accepts ends it (by default a
    bus fault), say so and start it again with backoff; any other error goes through (a
    node agent's bug is not retried into a loop: the agent stops and its supervisor restarts
    it whole). With ``restart_when_done`` a part that returns is started again too."""
    backoff = Backoff(first_s=first_backoff_s, max_s=max_backoff_s)
    loop = asyncio.get_running_loop()
    failures = 0
    while True:
        started = loop.time()
        try:
            await part()
            if not restart_when_done:
                return
            reason = "it returned"
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            if not isinstance(exc, Exception | BaseExceptionGroup) or not restart_if(exc):
                raise
            reason = describe(exc)
            forget_stale_cancels()
        if loop.time() - started > healthy_after_s:
            backoff.reset()  # it ran well for a while: this is a new run of failures
            failures = 0
        failures += 1
        if failures == 1:
            log.warning("%s stopped (%s); starting it again", what, reason)
        else:
            log.debug("%s stopped again (%s); restart %s", what, reason, failures)
        await backoff.wait()
