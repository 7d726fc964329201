"""Whether nodes are alive, as the orchestrator sees it: their heartbeats (core NATS) and
their liveness leases in ``tandem_leases``.

Both are judged by this process's monotonic clock: a heartbeat's arrival, a lease's
revision changing. A node is *gone* when neither has moved for its failover timeout (never
shorter than its lease's ttl, so that an Active that is merely cut off has hidden itself
before anyone replaces it). Until this process has watched for that long, nobody is gone;
and while this process cannot read the leases (its own connection is away, the bucket is
electing a leader) it sees nothing, so the watch starts again when it can: a silence it
could not have heard is never taken for a node's.

The lease's last value is kept too (its role and epoch: a node that hid at a new epoch says
so there), with when the lease was last read at all (``lease_read_at``): a revision that has
not changed is known unchanged only up to that read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nats.aio.msg import Msg
from nats.js.errors import KeyNotFoundError
from pydantic import ValidationError

from tandem.events.bus import Bus
from tandem.events.cancel import raise_if_cancelled
from tandem.events.heartbeat import HEARTBEATS_ALL, Heartbeat, listening
from tandem.events.subjects import LEASES_BUCKET, node_lease_key
from tandem.events.transient import describe

log = logging.getLogger(__name__)


@dataclass
class Seen:
    heartbeat: Heartbeat | None = None
    heartbeat_at: float | None = None
    lease_revision: int | None = None
    lease_at: float | None = None
    lease_ttl_s: float | None = None
    failover_timeout_s: float | None = None
    failover_mode: str | None = None
    #: The role and epoch the lease's last value says the node plays.
    lease_role: str | None = None
    lease_epoch: int | None = None
    #: Where clients reach the node while Active, as its lease says.
    public: str | None = None
    #: When the lease was last read (found, or found absent): this process's clock.
    lease_read_at: float | None = None


class SeenNodes(dict[tuple[str, str], Seen]):
    """What is seen of each (cluster, node), with the nodes of each cluster kept beside it
    however an entry is added or removed."""

    def __init__(self) -> None:
        super().__init__()
        self.by_cluster: dict[str, set[str]] = {}

    def __setitem__(self, key: tuple[str, str], value: Seen) -> None:
        super().__setitem__(key, value)
        self.by_cluster.setdefault(key[0], set()).add(key[1])

    def __delitem__(self, key: tuple[str, str]) -> None:
        super().__delitem__(key)
        self._forget(key)

    def setdefault(self, key: tuple[str, str], default: Seen) -> Seen:
        if key not in self:
            self[key] = default
        return self[key]

    def pop(self, key: tuple[str, str], *default: Seen) -> Seen:  # type: ignore[override]
        had = key in self
        value = super().pop(key, *default)
        if had:
            self._forget(key)
        return value

    def clear(self) -> None:
        super().clear()
        self.by_cluster.clear()

    def _forget(self, key: tuple[str, str]) -> None:
        nodes = self.by_cluster.get(key[0])
        if nodes is not None:
            nodes.discard(key[1])
            if not nodes:
                del self.by_cluster[key[0]]


class Liveness:
    def __init__(
        self,
        bus: Bus,
        *,
        default_timeout_s: float,
        lease_poll_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bus = bus
        self.default_timeout_s = default_timeout_s
        self.lease_poll_s = lease_poll_s
        self.clock = clock
        self.started = clock()
        #: Since when this process has been able to watch without a break (None: blind now).
        self.watching_since: float | None = self.started
        self.seen = SeenNodes()

    @property
    def nodes_by_cluster(self) -> dict[str, set[str]]:
        """The nodes of ``seen`` by cluster (views of one cluster must not scan every node)."""
        return self.seen.by_cluster

    def _entry(self, cluster: str, node: str) -> Seen:
        return self.seen.setdefault((cluster, node), Seen())

    async def run(self) -> None:
        async with listening(self.bus, HEARTBEATS_ALL, self._on_heartbeat):
            while True:
                raise_if_cancelled()  # a timed wait may have swallowed a stop
                await self.poll_leases()
                await asyncio.sleep(self.lease_poll_s)

    async def _on_heartbeat(self, msg: Msg) -> None:
        try:
            beat = Heartbeat.model_validate_json(msg.data)
        except ValidationError:
            return  # the node's peers dead-letter it; here it only is not a sign of life
        entry = self._entry(beat.cluster, beat.node)
        entry.heartbeat, entry.heartbeat_at = beat, self.clock()

    def watch(self, cluster: str, node: str) -> None:
        """Also poll this node's lease (nodes are learned from heartbeats and the record)."""
        self._entry(cluster, node)

    def _blind(self, why: str) -> None:
        if self.watching_since is not None:
            log.info("liveness: cannot watch the nodes (%s): nobody is judged gone meanwhile", why)
        self.watching_since = None

    async def poll_leases(self) -> None:
        started = self.clock()
        nc = getattr(self.bus, "nc", None)
        if nc is not None and not nc.is_connected:
            self._blind("the bus connection is away")
            return
        try:
            kv = await self.bus.kv(LEASES_BUCKET)
        except Exception as exc:
            self._blind(f"leases unreadable: {describe(exc)}")
            return
        if await self._poll_each(kv) and self.watching_since is None:
            log.info("liveness: watching the nodes again")
            self.watching_since = started

    async def _poll_each(self, kv: Any) -> bool:
        """Read every known node's lease; False when the bucket could not be read."""
        for (cluster, node), entry in list(self.seen.items()):
            asked = self.clock()  # the value read is at least as new as this
            try:
                got = await asyncio.wait_for(kv.get(node_lease_key(cluster, node)), 2)
            except KeyNotFoundError:
                entry.lease_read_at = asked
                continue
            except Exception as exc:
                self._blind(f"lease of {cluster}/{node} unreadable: {describe(exc)}")
                return False
            if got.revision != entry.lease_revision:
                # Renewed at the latest now: judged from when it was seen, never earlier.
                entry.lease_revision, entry.lease_at = got.revision, self.clock()
                self._read_lease(entry, got.value or b"")
            entry.lease_read_at = asked
        return True

    @staticmethod
    def _read_lease(entry: Seen, value: bytes) -> None:
        import json

        try:
            data = json.loads(value)
        except ValueError:
            return
        if isinstance(data, dict):
            ttl = data.get("ttl_s")
            entry.lease_ttl_s = float(ttl) if isinstance(ttl, int | float) else None
            timeout = data.get("failover_timeout_s")
            entry.failover_timeout_s = float(timeout) if isinstance(timeout, int | float) else None
            mode = data.get("failover_mode")
            entry.failover_mode = mode if isinstance(mode, str) else None
            role = data.get("role")
            entry.lease_role = role if isinstance(role, str) else None
            epoch = data.get("epoch")
            ok = isinstance(epoch, int) and not isinstance(epoch, bool)
            entry.lease_epoch = epoch if ok else None
            public = data.get("public")
            entry.public = public if isinstance(public, str) else None

    def heartbeat(self, cluster: str, node: str) -> Heartbeat | None:
        entry = self.seen.get((cluster, node))
        return entry.heartbeat if entry else None

    def timeout_s(self, cluster: str, node: str) -> float:
        entry = self.seen.get((cluster, node))
        timeout = self.default_timeout_s
        if entry is not None:
            timeout = entry.failover_timeout_s or timeout
            timeout = max(timeout, entry.lease_ttl_s or 0.0)
        return timeout

    def mode(self, cluster: str, node: str) -> str:
        entry = self.seen.get((cluster, node))
        return (entry.failover_mode if entry else None) or "automatic"

    def alive(self, cluster: str, node: str) -> bool:
        """Heartbeats arriving (within the detection timeout)."""
        entry = self.seen.get((cluster, node))
        if entry is None or entry.heartbeat_at is None:
            return False
        return self.clock() - entry.heartbeat_at <= self.timeout_s(cluster, node)

    def gone(self, cluster: str, node: str) -> str:
        """Why the node is gone (no heartbeat and no lease renewal for its timeout), or ''."""
        now = self.clock()
        timeout = self.timeout_s(cluster, node)
        since = self.watching_since
        if since is None or now - since < timeout:
            return ""  # blind now, or not watched long enough since it could see again
        entry = self.seen.get((cluster, node)) or Seen()
        last_beat = entry.heartbeat_at if entry.heartbeat_at is not None else since
        last_lease = entry.lease_at if entry.lease_at is not None else since
        silent = now - max(last_beat, last_lease, since)
        if silent < timeout:
            return ""
        return (
            f"{node} silent for {silent:.1f}s: no heartbeat and no lease renewal "
            f"(failover timeout {timeout:g}s)"
        )
