"""The lease bucket on a real 3-node nats-server cluster, provisioned R3 as services provision
it (``tandem.events.provisioning.provision``), and the parts that write and read it as the
services do: an agent's ``LeaseKeeper`` (its own connection, as ``tandem agent`` runs it), an
orchestrator's ``LeaderLease`` and ``Liveness``, heartbeats as an agent sends them, and a
probe that writes the bucket as often as it can (to measure how long it was unwritable)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tandem.agent.lease import LeaseKeeper, LeaseRecord
from tandem.events.bus import Bus
from tandem.events.catalog.vocabulary import Role
from tandem.events.embedded import NatsCluster
from tandem.events.heartbeat import Heartbeat
from tandem.events.nodeboard import NodeBoard
from tandem.events.provisioning import provision
from tandem.events.secure_bus import SecureBusFiles
from tandem.events.settings import BusSettings, load_bus_settings, load_stream_settings
from tandem.events.subjects import LEASES_BUCKET, heartbeat_subject

T = TypeVar("T")

CLUSTER = "lease-r3"
#: The stream behind the ``tandem_leases`` bucket.
LEASES_STREAM = f"KV_{LEASES_BUCKET}"


@contextlib.contextmanager
def nats_cluster(base_dir: Path, secrets: SecureBusFiles) -> Iterator[NatsCluster]:
    c = NatsCluster(base_dir=base_dir, size=3, extra_config=secrets.server_config()).start()
    try:
        yield c
    finally:
        c.stop()


def bus_settings(urls: list[str]) -> BusSettings:
    return load_bus_settings(servers=",".join(urls), reconnect_wait_s=0.2, request_timeout_s=2)


@contextlib.asynccontextmanager
async def connected(urls: list[str], name: str) -> AsyncIterator[Bus]:
    bus = await Bus.connect(bus_settings(urls), name=name, retry_for_s=30)
    try:
        yield bus
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(bus.nc.close(), 5)


async def until_ok(what: str, attempt: Callable[[], Awaitable[T]], timeout: float = 60.0) -> T:
    """Retry ``attempt`` while the cluster elects leaders or a connection comes back."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await attempt()
        except Exception as exc:
            if loop.time() > deadline:
                raise AssertionError(f"{what} did not succeed within {timeout}s: {exc}") from exc
            await asyncio.sleep(0.1)


async def until(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not so within {timeout}s")
        await asyncio.sleep(0.02)


async def provision_r3(bus: Bus) -> None:
    """The streams and buckets, R3, as ``tandem bus provision`` makes them."""
    await until_ok("provisioning R3", lambda: provision(bus.js, load_stream_settings(replicas=3)))


async def lease_stream_peers(bus: Bus) -> tuple[str, list[str]]:
    """The leader of the lease bucket's stream and its followers, once all of them are
    current (a follower still catching up is no replica to count on yet)."""

    async def settled() -> tuple[str, list[str]]:
        cluster = (await bus.js.stream_info(LEASES_STREAM)).cluster
        assert cluster is not None and cluster.leader, "no leader yet"
        replicas = cluster.replicas or []
        assert len(replicas) == 2 and all(p.current for p in replicas), f"replicas: {replicas}"
        return cluster.leader, [str(p.name) for p in replicas]

    return await until_ok("the lease stream's peers settling", settled)


async def kv_get(bus: Bus, key: str, timeout: float = 60.0) -> Any:
    """The key's entry, retried while the bucket elects a leader (never while missing)."""

    async def attempt() -> Any:
        kv = await bus.kv(LEASES_BUCKET)
        return await asyncio.wait_for(kv.get(key), 2)

    return await until_ok(f"reading {key}", attempt, timeout)


def lease_value(node: str, *, ttl_s: float = 1.5, role: Role = Role.PASSIVE) -> bytes:
    """A node lease's value, as an agent writes it."""
    return (
        LeaseRecord(node=node, ttl_s=ttl_s, renewed_at=time.time(), role=role, epoch=1)
        .model_dump_json()
        .encode()
    )


@dataclass
class Agent:
    """A node's lease renewed by a real ``LeaseKeeper`` on its own connection."""

    keeper: LeaseKeeper
    fences: list[str] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    #: Each acknowledged renewal's start (the keeper's ``last_renewed``), in order.
    renewed: list[float] = field(default_factory=list)
    _watch: asyncio.Task[None] | None = None

    def start(self) -> Agent:
        self.task = asyncio.create_task(self.keeper.run())
        self._watch = asyncio.create_task(self._follow())
        return self

    async def _follow(self) -> None:
        while True:
            last = self.keeper.last_renewed
            if last is not None and (not self.renewed or self.renewed[-1] != last):
                self.renewed.append(last)
            await asyncio.sleep(0.01)

    def longest_unrenewed_s(self) -> float:
        """The longest time between two acknowledged renewals' starts, so far."""
        starts = list(self.renewed)
        last = self.keeper.last_renewed
        if last is not None and (not starts or starts[-1] != last):
            starts.append(last)
        return max((b - a for a, b in itertools.pairwise(starts)), default=0.0)

    async def stop(self) -> None:
        for task in (self.task, self._watch):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def agent(
    bus: Bus,
    node: str,
    *,
    role: Role = Role.PASSIVE,
    ttl_s: float = 1.5,
    renew_every_s: float = 0.2,
    fence_margin_s: float = 0.4,
) -> Agent:
    """Defaults: the agent's (``[lease]`` in the node config)."""
    fences: list[str] = []

    async def fence(reason: str) -> list[str]:
        fences.append(reason)
        return ["test: fence recorded"]

    keeper = LeaseKeeper(
        bus,
        CLUSTER,
        node,
        ttl_s=ttl_s,
        renew_every_s=renew_every_s,
        fence_margin_s=fence_margin_s,
        board=NodeBoard(role=role, epoch=1),
        fence=fence,
        emit=lambda event: None,
        own_connection=True,
    )
    return Agent(keeper, fences)


@dataclass
class Heartbeats:
    """A node's heartbeats on core NATS, as its monitor sends them."""

    bus: Bus
    node: str
    interval_s: float = 0.1
    last_sent: float | None = None
    task: asyncio.Task[None] | None = None

    def start(self) -> Heartbeats:
        self.task = asyncio.create_task(self._send())
        return self

    async def _send(self) -> None:
        seq = 0
        subject = heartbeat_subject(CLUSTER, self.node)
        while True:
            seq += 1
            beat = Heartbeat(
                cluster=CLUSTER,
                node=self.node,
                role=Role.PASSIVE,
                epoch=1,
                seq=seq,
                interval_s=self.interval_s,
                sent_at=time.time(),
            )
            with contextlib.suppress(Exception):
                await self.bus.nc.publish(subject, beat.to_bytes())
                await self.bus.nc.flush(1)
                self.last_sent = time.monotonic()
            await asyncio.sleep(self.interval_s)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


@dataclass
class Probe:
    """Writes one key of the lease bucket every ``pause_s`` on its own connection and keeps
    when each write was acknowledged: how long the bucket could not be written."""

    bus: Bus
    pause_s: float = 0.02
    acked: list[float] = field(default_factory=list)
    task: asyncio.Task[None] | None = None

    def start(self) -> Probe:
        self.task = asyncio.create_task(self._write())
        return self

    async def _write(self) -> None:
        while True:
            try:
                kv = await self.bus.kv(LEASES_BUCKET)
                await asyncio.wait_for(kv.put("probe", b"x"), 1.0)
                self.acked.append(time.monotonic())
            except Exception:
                pass
            await asyncio.sleep(self.pause_s)

    def unwritable_after(self, when: float) -> float | None:
        """The longest time without an acknowledged write from the last one before ``when``
        on (None: no write before it)."""
        before = [t for t in self.acked if t <= when]
        if not before:
            return None
        since = [before[-1], *(t for t in self.acked if t > when)]
        return max((b - a for a, b in itertools.pairwise(since)), default=None)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


async def leader_since(bus: Bus) -> Any:
    """When the lease stream's leader of now was elected (the stream leader's word)."""
    info = await until_ok("lease stream info", lambda: bus.js.stream_info(LEASES_STREAM))
    cluster = info.cluster
    assert cluster is not None
    return cluster.leader_since


async def elected_again(bus: Bus, victim: str, before: Any) -> str:
    """Wait for the lease stream's election after ``victim`` (its leader) was killed, and
    check that it was one: a leader other than the victim, elected since ``before``."""

    async def elected() -> str:
        cluster = (await bus.js.stream_info(LEASES_STREAM)).cluster
        assert cluster is not None and cluster.leader not in (None, victim), "no new leader"
        assert cluster.leader_since is not None and cluster.leader_since > before, (
            f"{cluster.leader} leads since {cluster.leader_since}, before the kill: the server "
            f"killed ({victim}) was not the lease stream's leader"
        )
        return str(cluster.leader)

    return await until_ok("the lease stream's election", elected)
