"""Durable event consumers: decode, validate, hand to a handler, ack only after success.

- A message that does not decode or validate goes to the DLQ with the reason; the consumer
  goes on with the next one.
- A handler raising ``TransientError`` gets the message again later (nak with a backoff
  that grows with each delivery), up to ``max_deliver`` times; then it is dead-lettered.
- A handler raising anything else is a permanent failure for that message: dead-lettered
  with the exception as the reason, and the consumer goes on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from tandem.events import subjects
from tandem.events.bus import Bus
from tandem.events.cancel import raise_if_cancelled
from tandem.events.deadletter import Rejected, dead_letter
from tandem.events.envelope import Event
from tandem.events.errors import DecodeError, TransientError
from tandem.events.registry import decode_event
from tandem.events.transient import describe, is_bus_fault, is_transient, retry_transient

log = logging.getLogger(__name__)

Handler = Callable[[Event], Awaitable[None]]


@dataclass(frozen=True)
class ConsumerOptions:
    durable: str
    filter_subject: str = subjects.EVENTS_ALL
    stream: str = subjects.EVENTS_STREAM
    batch: int = 64
    fetch_timeout_s: float = 1.0
    ack_wait_s: float = 30.0
    max_deliver: int = 10
    #: Delay before the n-th redelivery after a transient failure (last value repeats).
    backoff_s: tuple[float, ...] = (0.5, 1.0, 2.0, 5.0, 10.0)
    deliver_policy: DeliverPolicy = DeliverPolicy.ALL


@dataclass
class ConsumerStats:
    handled: int = 0
    dead_lettered: int = 0
    retried: int = 0


class DurableConsumer:
    """Run with ``await consumer.run()`` (until cancelled or ``stop()``)."""

    def __init__(self, bus: Bus, options: ConsumerOptions, handler: Handler) -> None:
        subjects.dlq_subject(options.stream, options.durable)  # validates the durable name
        self.bus = bus
        self.options = options
        self.handler = handler
        self.stats = ConsumerStats()
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        o = self.options
        config = ConsumerConfig(
            durable_name=o.durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=o.ack_wait_s,
            # +1 so that the last delivery is still ours to dead-letter.
            max_deliver=o.max_deliver + 1,
            deliver_policy=o.deliver_policy,
            filter_subject=o.filter_subject,
        )
        sub = await retry_transient(
            f"consumer {o.durable}: subscribing",
            lambda: self.bus.js.pull_subscribe(
                o.filter_subject, durable=o.durable, stream=o.stream, config=config
            ),
        )
        log.info("consumer %s on %s started", o.durable, o.filter_subject)
        failing = ""
        try:
            while not self._stopping.is_set():
                try:
                    raise_if_cancelled()  # 3.11's wait_for may have swallowed a cancel
                    msgs = await sub.fetch(o.batch, timeout=o.fetch_timeout_s)
                except (NatsTimeoutError, TimeoutError):
                    continue
                except Exception as exc:
                    if not is_transient(exc):
                        raise
                    # The stream is electing a leader, or the connection is coming back.
                    if not failing:
                        log.warning(
                            "consumer %s: fetch failed (%s); again", o.durable, describe(exc)
                        )
                    failing = describe(exc)
                    await asyncio.sleep(0.5)
                    continue
                if failing:
                    log.info("consumer %s: fetching again", o.durable)
                    failing = ""
                for msg in msgs:
                    await self._handle(msg)
        finally:
            await sub.unsubscribe()

    async def _handle(self, msg: Msg) -> None:
        o = self.options
        meta = msg.metadata
        rejected = Rejected.of_message(msg, o.durable, "")
        try:
            event = decode_event(msg.data)
        except DecodeError as exc:
            await self._reject(msg, rejected, f"undecodable: {exc.reason}")
            return
        try:
            try:
                await self.handler(event)
            except Exception as exc:
                if isinstance(exc, TransientError) or not is_bus_fault(exc):
                    raise
                # A bus call of the handler failed (a publish timed out, a leader election):
                # the message is fine; it is delivered again.
                raise TransientError(f"bus fault: {describe(exc)}") from exc
        except TransientError as exc:
            if meta.num_delivered >= o.max_deliver:
                reason = f"gave up after {meta.num_delivered} deliveries: {exc}"
                await self._reject(msg, rejected, reason)
                return
            delay = o.backoff_s[min(meta.num_delivered, len(o.backoff_s)) - 1]
            log.info(
                "%s: transient failure on seq %s (%s); retry in %ss",
                o.durable,
                meta.sequence.stream,
                exc,
                delay,
            )
            self.stats.retried += 1
            await msg.nak(delay=delay)
            return
        except asyncio.CancelledError:
            await msg.nak()
            raise
        except Exception as exc:
            log.exception("%s: handler failed on %s", o.durable, event.type)
            await self._reject(msg, rejected, f"handler failed: {type(exc).__name__}: {exc}")
            return
        await msg.ack()
        self.stats.handled += 1

    async def _reject(self, msg: Msg, rejected: Rejected, reason: str) -> None:
        try:
            await dead_letter(self.bus, replace(rejected, reason=reason))
        except Exception as exc:
            # The DLQ is unreachable: keep the message (redelivered later), never drop it.
            log.error(
                "%s: cannot dead-letter seq %s (%s); will retry",
                self.options.durable,
                rejected.source_seq,
                exc,
            )
            await msg.nak(delay=self.options.backoff_s[-1])
            return
        self.stats.dead_lettered += 1
        await msg.term()
