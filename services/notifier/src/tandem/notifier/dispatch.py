"""The notifier's durable consumer of TANDEM_EVENTS and its per-cluster workers.

- One durable pull consumer (``notifier``) on every event; alerts and role changes go to the
  worker of their cluster; silences and acknowledgements are folded at once, in stream
  order; the others are acknowledged at once. A message that does not
  decode goes to the dead-letter stream, and the consumer goes on.
- A cluster's worker takes its events one at a time, in stream order: its routes each get the
  notification (at the same time; a route never has two of one cluster in flight, so a hook
  is never run twice at once for one cluster). The message is acknowledged once every route
  has recorded its outcome in the ledger and the state is saved.
- A firing alert for routes with ``group_wait_s`` waits (from its raise) for its clear to
  show up behind it in the cluster's queue: one that does was flapping and is not sent on
  those routes (the other routes have it at once).
- While an event waits or is on its way, JetStream is told every third of the ack wait that
  it is still being worked on: it is not delivered again meanwhile.
- At start, when messages were delivered and not all acknowledged (the notifier was killed),
  the consumer is made again from its ack floor: those messages come again, in order, before
  any newer one. The ledger and ``done_seq`` skip what was already done.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta

from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.client import JetStreamContext
from nats.js.errors import NotFoundError

from tandem.events.bus import Bus
from tandem.events.cancel import raise_if_cancelled
from tandem.events.deadletter import Rejected, dead_letter
from tandem.events.errors import DecodeError
from tandem.events.registry import decode_event
from tandem.events.subjects import EVENTS_ALL, EVENTS_STREAM
from tandem.events.transient import Backoff, describe, is_transient, retry_transient
from tandem.notifier.book import Before, Book
from tandem.notifier.cluster_queue import ClusterQueue, Job
from tandem.notifier.notification import Notification, notification_of
from tandem.notifier.policy import Policy
from tandem.notifier.route import RouteRunner

log = logging.getLogger(__name__)

NOTIFIED = {"AlertRaised", "AlertCleared", "RoleChanged", "NodeSelfFenced", "NodeUnfenced"}
FOLDED = {"AlertAcknowledged", "SilenceCreated", "SilenceRemoved"}
MAX_ACK_PENDING = 1000
BUS_CALL_DEADLINE_S = 15.0


class Dispatcher:
    def __init__(
        self,
        bus: Bus,
        *,
        durable: str,
        book: Book,
        policy: Policy,
        runners: list[RouteRunner],
        ack_wait_s: float = 30.0,
        fetch_batch: int = 64,
    ) -> None:
        self.bus = bus
        self.durable = durable
        self.book = book
        self.policy = policy
        self.runners = runners
        self.ack_wait_s = ack_wait_s
        self.fetch_batch = fetch_batch
        self._queues: dict[str, ClusterQueue] = {}
        #: Every message taken and not yet acknowledged, by stream sequence.
        self._inflight: dict[int, Job] = {}
        self.ready = asyncio.Event()
        self.handled = 0

    async def run(self) -> None:
        """Until cancelled. Started again (``keep_running``) after a bus fault, it begins
        afresh: workers and queues anew, the consumer made again from its ack floor."""
        self._queues, self._inflight = {}, {}
        sub = await retry_transient(f"consumer {self.durable}: subscribing", self._subscribe)
        self.ready.set()
        log.info("consumer %s on %s started", self.durable, EVENTS_ALL)
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._keep_alive())
                await self._fetch_forever(sub, tasks)
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _subscribe(self) -> JetStreamContext.PullSubscription:
        js = self.bus.js
        config = ConsumerConfig(
            name=self.durable,
            durable_name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait_s,
            max_deliver=-1,
            max_ack_pending=MAX_ACK_PENDING,
            filter_subject=EVENTS_ALL,
            # A first start notifies what happens from now on, not the stream's history.
            deliver_policy=DeliverPolicy.NEW,
        )
        try:
            info = await js.consumer_info(EVENTS_STREAM, self.durable)
        except NotFoundError:
            info = None
        if info is not None:
            floor = info.ack_floor.stream_seq if info.ack_floor else 0
            delivered = info.delivered.stream_seq if info.delivered else 0
            if delivered > (floor or 0):
                log.info(
                    "consumer %s: messages up to %s were delivered, acknowledged in full up to "
                    "%s: taking them again from %s, in order",
                    self.durable, delivered, floor, (floor or 0) + 1,
                )  # fmt: skip
                await js.delete_consumer(EVENTS_STREAM, self.durable)
                config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
                config.opt_start_seq = (floor or 0) + 1
                info = None
        if info is None:
            await js.add_consumer(EVENTS_STREAM, config)
        return await js.pull_subscribe_bind(durable=self.durable, stream=EVENTS_STREAM)

    async def _fetch_forever(
        self, sub: JetStreamContext.PullSubscription, tasks: asyncio.TaskGroup
    ) -> None:
        failing = ""
        while True:
            raise_if_cancelled()
            try:
                msgs = await sub.fetch(self.fetch_batch, timeout=1.0)
            except (NatsTimeoutError, TimeoutError):
                continue
            except Exception as exc:
                if not is_transient(exc):
                    raise
                if not failing:
                    log.warning("consumer %s: fetch failed (%s); again", self.durable,
                                describe(exc))  # fmt: skip
                failing = describe(exc)
                await asyncio.sleep(0.5)
                continue
            if failing:
                log.info("consumer %s: fetching again", self.durable)
                failing = ""
            for msg in msgs:
                await self._take(msg, tasks)

    async def _take(self, msg: Msg, tasks: asyncio.TaskGroup) -> None:
        seq = msg.metadata.sequence.stream
        if seq in self._inflight:
            self._inflight[seq].msg = msg  # delivered again while waiting: the same job
            return
        event_type = msg.subject.rsplit(".", 1)[-1]
        if event_type not in NOTIFIED | FOLDED:
            await self._ack(msg)
            return
        try:
            event = decode_event(msg.data)
        except DecodeError as exc:
            await self._reject(msg, f"undecodable: {exc.reason}")
            return
        if event_type in FOLDED:
            # Silences and acknowledgements apply to every cluster from their place in the
            # stream on: folded here, in stream order, not by a cluster's worker.
            self.book.fold(event)
            try:
                await self.book.save()
            except OSError as exc:  # kept in memory; the next save has it
                log.error("%s: state not saved after %s: %s", self.durable, event.type, exc)
            await self._ack(msg)
            return
        job = Job(seq, event, msg)
        self._inflight[seq] = job
        queue = self._queues.get(event.cluster)
        if queue is None:
            queue = self._queues[event.cluster] = ClusterQueue()
            tasks.create_task(self._work(event.cluster, queue), name=f"notify-{event.cluster}")
        queue.put(job)

    async def _work(self, cluster: str, queue: ClusterQueue) -> None:
        while True:
            job = await queue.get()
            try:
                await self._handle_until_stored(job)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("%s: notifying %s failed", cluster, job.event.type)
                await self._reject(job.msg, f"handler failed: {type(exc).__name__}: {exc}")
            else:
                await self._ack(job.msg)
                self.handled += 1
            finally:
                self._inflight.pop(job.seq, None)

    async def _handle_until_stored(self, job: Job) -> None:
        """``_handle``, again while the state folder fails (a full disk): the cluster waits,
        in order; the ledger skips the routes already done."""
        backoff = Backoff(first_s=1.0, max_s=30.0)
        failures = 0
        while True:
            try:
                await self._handle(job)
                if failures:
                    log.info("%s: the state folder works again", self.durable)
                return
            except* OSError as group:
                failures += 1
                if failures == 1:
                    log.error("%s: cannot write the ledger or state (%s); %s waits",
                              self.durable, group.exceptions[0], job.event.cluster)  # fmt: skip
            await backoff.wait()

    async def _handle(self, job: Job) -> None:
        event = job.event
        if self.book.handled(event.cluster, job.seq):
            return  # replayed from the ack floor: done before the restart
        before = self.book.fold(event)
        n = notification_of(
            event,
            job.seq,
            since=_parse(before.since) if before is not None else None,
            message=before.message if before is not None else "",
        )
        if n is not None:
            chosen = [r for r in self.runners if self.policy.selects(r.route, n)]
            now = [r for r in chosen if r.route.group_wait_s == 0 or n.status != "firing"]
            await self._deliver(now, n, before)
            grouped = [r for r in chosen if r not in now]
            if grouped:
                # Wait (from the raise) for its clear; the cluster's later events wait too.
                wait_s = max(r.route.group_wait_s for r in grouped)
                deadline = n.event.occurred_at + timedelta(seconds=wait_s)
                flapped = await self._queues[event.cluster].cleared_by(n.fingerprint, deadline)
                await self._deliver(grouped, n, before, flapped=flapped)
        self.book.done_seq[event.cluster] = job.seq
        await self.book.save()

    async def _deliver(
        self,
        runners: list[RouteRunner],
        n: Notification,
        before: Before | None,
        *,
        flapped: bool = False,
    ) -> None:
        async with asyncio.TaskGroup() as deliveries:
            for runner in runners:
                deliveries.create_task(runner.deliver(n, before, flapped=flapped))

    async def _keep_alive(self) -> None:
        """Tell JetStream the messages taken are being worked on (no redelivery)."""
        while True:
            await asyncio.sleep(self.ack_wait_s / 3)
            for job in list(self._inflight.values()):
                with contextlib.suppress(Exception):
                    await job.msg.in_progress()

    async def _ack(self, msg: Msg) -> None:
        try:
            await retry_transient(
                f"{self.durable}: acknowledging", msg.ack, deadline_s=BUS_CALL_DEADLINE_S
            )
        except Exception as exc:  # delivered again later: the ledger knows it is done
            log.warning("%s: could not acknowledge seq %s: %s", self.durable,
                        msg.metadata.sequence.stream, describe(exc))  # fmt: skip

    async def _reject(self, msg: Msg, reason: str) -> None:
        meta = msg.metadata
        rejected = Rejected.of_message(msg, self.durable, reason)
        try:
            await retry_transient(
                "dead-lettering", lambda: dead_letter(self.bus, rejected),
                deadline_s=BUS_CALL_DEADLINE_S,
            )  # fmt: skip
            await msg.term()
        except Exception as exc:
            log.error("%s: cannot dead-letter seq %s (%s); it comes again later", self.durable,
                      meta.sequence.stream, describe(exc))  # fmt: skip
            with contextlib.suppress(Exception):
                await msg.nak(delay=5.0)


def _parse(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None
