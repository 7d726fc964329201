"""Whether nodes are alive, as the orchestrator sees it: their heartbeats (core NATS) and
their liveness leases in ``tandem_leases``.

Both are judged by this process's monotonic clock: a heartbeat's arrival, a lease's
revision changing. A node is *gone* when neither has moved for its failover timeout (never
shorter than its lease's ttl, so that an Active that is merely cut off has hidden itself
before anyone replaces it). Until this process has watched for that long, nobody is gone;
and while its connection is away it sees nothing, so the watch starts again when it can: a
silence it could not have heard is never taken for a node's.

Leases are followed by one watch of the whole bucket (``BucketWatch``): a renewal costs one
delivery, a node that does not change costs nothing, and the watch knows up to when it has
seen every write (``known_until``). A lease's silence is judged up to that time only, so a
watch that stalls delays a verdict and never fakes one.

Heartbeats and lease values are kept as they arrived and decoded when someone asks: the
sender is known from the subject (a node may publish only its own), and most of the 4 per
second and node are never looked at.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

from nats.aio.msg import Msg
from pydantic import ValidationError

from tandem.events.bucket_watch import BucketWatch
from tandem.events.bus import Bus
from tandem.events.cancel import raise_if_cancelled
from tandem.events.heartbeat import HEARTBEATS_ALL, Heartbeat, listening
from tandem.events.subjects import LEASES_BUCKET

log = logging.getLogger(__name__)

_NODE_LEASE_PREFIX = "node."


@dataclass
class LeaseFields:
    """What a lease's value says (each None when absent or not of its type)."""

    ttl_s: float | None = None
    failover_timeout_s: float | None = None
    failover_mode: str | None = None
    #: The role and epoch the lease's last value says the node plays.
    role: str | None = None
    epoch: int | None = None
    #: Where clients reach the node while Active, as its lease says.
    public: str | None = None

    @classmethod
    def decode(cls, value: bytes) -> LeaseFields:
        try:
            data = json.loads(value)
        except ValueError:
            return cls()
        if not isinstance(data, dict):
            return cls()

        def number(key: str) -> float | None:
            v = data.get(key)
            return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None

        def text(key: str) -> str | None:
            v = data.get(key)
            return v if isinstance(v, str) else None

        epoch = data.get("epoch")
        ok = isinstance(epoch, int) and not isinstance(epoch, bool)
        return cls(
            ttl_s=number("ttl_s"),
            failover_timeout_s=number("failover_timeout_s"),
            failover_mode=text("failover_mode"),
            role=text("role"),
            epoch=epoch if ok else None,
            public=text("public"),
        )


def _lease_field(name: str) -> property:
    def get(self: Any) -> Any:
        return getattr(self.lease, name)

    def put(self: Any, value: Any) -> None:
        self._set_lease(**{name: value})

    return property(get, put, doc=f"The lease's {name} (None: not said).")


_LEASE_KWARGS = {
    "lease_ttl_s": "ttl_s",
    "failover_timeout_s": "failover_timeout_s",
    "failover_mode": "failover_mode",
    "lease_role": "role",
    "lease_epoch": "epoch",
    "public": "public",
}


class Seen:
    """What is seen of one node: kept as it arrived, decoded when asked (once per arrival).

    The decoded forms may also be given or set directly (a test's double, a view's copy)."""

    def __init__(
        self,
        *,
        heartbeat: Heartbeat | None = None,
        heartbeat_at: float | None = None,
        lease_revision: int | None = None,
        lease_at: float | None = None,
        **lease: Any,
    ) -> None:
        self.heartbeat_at = heartbeat_at
        #: The last heartbeat as it arrived (None: none, or one given decoded).
        self.heartbeat_raw: bytes | None = None
        self._beat = heartbeat
        self._beat_from: bytes | None = None
        self.lease_revision = lease_revision
        self.lease_at = lease_at
        #: The lease's last value as it arrived.
        self.lease_raw: bytes | None = None
        self._lease = LeaseFields(**{_LEASE_KWARGS[k]: v for k, v in lease.items()})
        self._lease_from: bytes | None = None

    @property
    def heartbeat(self) -> Heartbeat | None:
        """The last heartbeat (None: none yet, or the last did not decode)."""
        raw = self.heartbeat_raw
        if raw is not None and raw is not self._beat_from:
            self._beat_from = raw
            try:
                self._beat = Heartbeat.model_validate_json(raw)
            except ValidationError:
                self._beat = None  # the node's peers dead-letter it; here it says nothing
        return self._beat

    @heartbeat.setter
    def heartbeat(self, beat: Heartbeat | None) -> None:
        self.heartbeat_raw, self._beat, self._beat_from = None, beat, None

    @property
    def lease(self) -> LeaseFields:
        """What the lease's last value says."""
        raw = self.lease_raw
        if raw is not None and raw is not self._lease_from:
            self._lease, self._lease_from = LeaseFields.decode(raw), raw
        return self._lease

    def _set_lease(self, **change: Any) -> None:
        self._lease, self._lease_from = replace(self.lease, **change), self.lease_raw

    lease_ttl_s = _lease_field("ttl_s")
    failover_timeout_s = _lease_field("failover_timeout_s")
    failover_mode = _lease_field("failover_mode")
    lease_role = _lease_field("role")
    lease_epoch = _lease_field("epoch")
    public = _lease_field("public")


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
        restore_leases: Callable[[], Awaitable[object]] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bus = bus
        self.default_timeout_s = default_timeout_s
        #: How often the lease watch asks how far the bucket is (its ``known_until`` step).
        self.lease_poll_s = lease_poll_s
        self.clock = clock
        self.started = clock()
        #: Since when this process has been able to watch without a break (None: blind now).
        self.watching_since: float | None = None
        self.seen = SeenNodes()
        self.leases = BucketWatch(
            bus,
            LEASES_BUCKET,
            self._on_lease,
            check_every_s=lease_poll_s,
            on_missing=restore_leases,
            clock=clock,
        )

    @property
    def nodes_by_cluster(self) -> dict[str, set[str]]:
        """The nodes of ``seen`` by cluster (views of one cluster must not scan every node)."""
        return self.seen.by_cluster

    def _entry(self, cluster: str, node: str) -> Seen:
        entry = self.seen.get((cluster, node))
        if entry is None:
            entry = self.seen[(cluster, node)] = Seen()
        return entry

    async def run(self) -> None:
        async with listening(self.bus, HEARTBEATS_ALL, self._on_heartbeat):
            try:
                while True:
                    raise_if_cancelled()  # a timed wait may have swallowed a stop
                    await self.follow_leases()
                    await asyncio.sleep(self.lease_poll_s)
            finally:
                await self.leases.stop()

    async def _on_heartbeat(self, msg: Msg) -> None:
        # tandem.hb.<cluster>.<node>: a node may publish only its own.
        parts = msg.subject.split(".")
        if len(parts) != 4:
            return
        entry = self._entry(parts[2], parts[3])
        entry.heartbeat_raw, entry.heartbeat_at = msg.data, self.clock()

    def _on_lease(self, key: str, revision: int, value: bytes, deleted: bool) -> None:
        if not key.startswith(_NODE_LEASE_PREFIX) or deleted:
            return  # the leader's key; a lease deleted is a lease not renewed
        parts = key.split(".")
        if len(parts) != 3:
            return
        entry = self._entry(parts[1], parts[2])
        if revision != entry.lease_revision:
            # Renewed at the latest now: judged from when it was seen, never earlier.
            entry.lease_revision, entry.lease_at = revision, self.clock()
            entry.lease_raw = value

    def watch(self, cluster: str, node: str) -> None:
        """Also judge this node (nodes are learned from heartbeats, leases and the record)."""
        self._entry(cluster, node)

    def _blind(self, why: str) -> None:
        if self.watching_since is not None:
            log.info("liveness: cannot watch the nodes (%s): nobody is judged gone meanwhile", why)
        self.watching_since = None

    async def follow_leases(self) -> None:
        """One step of the lease watch, and whether this process sees the nodes now."""
        nc = getattr(self.bus, "nc", None)
        if nc is not None and not nc.is_connected:
            self._blind("the bus connection is away")
            return
        await self.leases.check()
        known = self.leases.known_until
        if known is None or self.clock() - known > self.leases.stall_s:
            self._blind("the lease watch is behind")
            return
        if self.watching_since is None:
            log.info(
                "liveness: watching the nodes (leases known up to %.1fs ago)", self.clock() - known
            )
            self.watching_since = known

    def lease_read_at(self, cluster: str, node: str) -> float | None:
        """Up to when this node's lease is known (renewed or not): None while not watching."""
        if self.watching_since is None:
            return None
        return self.leases.known_until

    @staticmethod
    def _read_lease(entry: Seen, value: bytes) -> None:
        entry.lease_raw = value

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
        since = self.watching_since
        known = self.leases.known_until
        if since is None or known is None:
            return ""  # blind now
        now = self.clock()
        entry = self.seen.get((cluster, node))
        last_beat = since
        if entry is not None and entry.heartbeat_at is not None and entry.heartbeat_at > since:
            last_beat = entry.heartbeat_at
        timeout = self.default_timeout_s
        if entry is not None:
            lease = entry.lease
            timeout = max(lease.failover_timeout_s or timeout, lease.ttl_s or 0.0)
        if now - since < timeout:
            return ""  # not watched long enough since it could see again
        entry = entry or Seen()
        last_lease = entry.lease_at if entry.lease_at is not None else since
        # Heartbeats are heard up to now; leases are known up to the watch's known_until.
        silent = min(now - last_beat, known - max(last_lease, since))
        if silent < timeout:
            return ""
        return (
            f"{node} silent for {silent:.1f}s: no heartbeat and no lease renewal "
            f"(failover timeout {timeout:g}s)"
        )
