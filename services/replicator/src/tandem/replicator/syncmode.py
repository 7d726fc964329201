"""Sync mode: an application's write returns only once a target has the batch on disk.

In sync mode the source also sends each batch straight to the targets on
``tandem.jdirect.<cluster>`` (core NATS) before the journal stores it: a target stores it from
there (the journal's copy, delivered later, is then acknowledged without storing it again), so
a write waits for one fsync on the target, not also for the journal's. Targets announce on
``tandem.jack.<cluster>.<node>`` (core NATS, "epoch seq") the highest sequence up to which
they hold every batch (stored or applied): a batch that came directly before an earlier one
did is not announced until that one is there. ``SyncWaiter`` keeps the highest per epoch.
``SyncSink`` wraps the send queue for the capture: it submits, seals at once, then waits
(not for an fsync op: everything before it already waited). When no target answers within
the timeout the policy decides: ``degrade`` (the default) stops waiting, raises an alert and
replicates asynchronously until a target acks again; ``block`` keeps the writer waiting.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from nats.aio.msg import Msg

from tandem.events.bus import Bus
from tandem.events.names import check_name
from tandem.replicator.ops import Op, OpKind
from tandem.replicator.sendqueue import SendQueue

log = logging.getLogger(__name__)


def stored_subject(cluster: str, node: str = "*") -> str:
    node_token = node if node == "*" else check_name(node, "node name")
    return f"tandem.jack.{check_name(cluster, 'cluster name')}.{node_token}"


def direct_subject(cluster: str) -> str:
    """Sync mode's direct copy of each batch to the targets (core NATS, next to the journal):
    a target stores it without waiting for the journal's own fsync and delivery."""
    return f"tandem.jdirect.{check_name(cluster, 'cluster name')}"


async def announce_stored(bus: Bus, cluster: str, node: str, epoch: int, seq: int) -> None:
    await bus.nc.publish(stored_subject(cluster, node), f"{epoch} {seq}".encode())


class SyncWaiter:
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self._stored = 0
        self._cond = threading.Condition()

    async def follow(self, bus: Bus, cluster: str) -> None:
        async def on_msg(msg: Msg) -> None:
            try:
                epoch, seq = (int(x) for x in msg.data.split())
            except ValueError:
                return
            if epoch == self.epoch:
                self.stored(seq)

        await bus.nc.subscribe(stored_subject(cluster), cb=on_msg)

    def stored(self, seq: int) -> None:
        with self._cond:
            if seq > self._stored:
                self._stored = seq
                self._cond.notify_all()

    def wait(self, seq: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._stored >= seq, timeout=timeout)


class SyncSink:
    def __init__(
        self,
        queue: SendQueue,
        waiter: SyncWaiter,
        *,
        timeout_s: float,
        policy: str,
        on_alert: Callable[[str], None],
        on_clear: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self.queue = queue
        self.waiter = waiter
        self.timeout_s = timeout_s
        self.policy = policy
        self.on_alert = on_alert
        self.on_clear = on_clear
        self.degraded = False

    def submit(self, op: Op) -> None:
        self.queue.submit(op)
        if op.kind is OpKind.FSYNC:
            # Every change before it already waited for a target to store it: an fsync adds
            # nothing a target must hold first (it travels with the next batch).
            return
        self.queue.seal_now()
        seq = self.queue.last_sealed_seq
        while not self.waiter.wait(seq, 0 if self.degraded else self.timeout_s):
            if self.policy == "block":
                log.warning(
                    "sync mode: no target stored batch %s yet; the writer keeps waiting", seq
                )
                continue
            if not self.degraded:
                self.degraded = True
                reason = (
                    f"sync mode: no target stored batch {seq} within {self.timeout_s}s; "
                    "replicating asynchronously"
                )
                log.error(reason)
                self.on_alert(reason)
            return
        if self.degraded:
            self.degraded = False
            log.info("sync mode: targets answer again; writes wait for them again")
            self.on_clear(f"sync mode: a target stored batch {seq}; writes wait for them again")
