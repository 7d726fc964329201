"""The load of the scale benchmark (bench/scale.py): N clusters x 2 nodes, each node sending
what its agent sends, at the agent's default rates, from processes of their own.

Per node, as ``tandem.agent`` does with its defaults:

* a heartbeat on core NATS ``tandem.hb.<cluster>.<node>`` every ``HeartbeatConfig``
  interval (0.25 s), the bytes of ``Heartbeat.to_bytes()`` (seq counting up, sent_at, and
  on the Active ``serve_until``: its last renewal + ``ttl - margin/2``);
* a lease renewal every ``renew_every_s`` (0.2 s): the ``LeaseRecord`` the agent's
  ``LeaseKeeper._record`` writes, to key ``node_lease_key`` of ``tandem_leases``;
* a read of its cluster's role record every ``RoleWatch.poll_s`` (0.5 s): the request
  nats-py's ``kv.get`` sends (a direct get when the bucket allows it).

To keep the generator cheap, templates are built once per node (only seq and times are put
in), the work of a node is spread over 50 ms ticks, renewals are plain core-NATS publishes to
``$KV.tandem_leases.<key>`` (stored by the server as a ``kv.put`` is; no acknowledgement is
waited for) and role reads are pipelined (replies counted, not awaited). The nodes share
``connections`` connections instead of two each.

The renewals of a sample of Actives are left out here: bench/scale_sampler.py sends them,
acknowledged, and judges whether those nodes would fence themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import math
import time
from multiprocessing.connection import Connection
from typing import Any

from tandem.agent.config import FailoverConfig, LeaseConfig, PublicIdentityConfig
from tandem.agent.lease import LeaseRecord
from tandem.agent.roles import RoleWatch
from tandem.events.bus import Bus
from tandem.events.catalog.vocabulary import HealthStatus, Identity, Role
from tandem.events.heartbeat import Heartbeat
from tandem.events.settings import load_bus_settings
from tandem.events.subjects import (
    LEASES_BUCKET,
    ROLES_BUCKET,
    heartbeat_subject,
    node_lease_key,
    role_key,
)
from tandem.monitor.settings import HeartbeatConfig

log = logging.getLogger(__name__)

TICK_S = 0.05
HEARTBEAT_S = HeartbeatConfig().interval_s
LEASE = LeaseConfig()
FAILOVER = FailoverConfig()
ROLE_POLL_S: float = inspect.signature(RoleWatch.__init__).parameters["poll_s"].default
PUBLIC = PublicIdentityConfig().describe()
FENCE_AFTER_S = LEASE.ttl_s - LEASE.fence_margin_s
GUARD_AFTER_S = LEASE.ttl_s - LEASE.fence_margin_s / 2
#: (node, identity, role) of every cluster, as the seed events say (east Active at epoch 1).
NODES = (("east", Identity.PRIMARY, Role.ACTIVE), ("west", Identity.SECONDARY, Role.PASSIVE))
CHECK = "web-http"
SENTINELS = {
    "seq": "987654321",
    "sent_at": "1111111111.125",
    "serve_until": "2222222222.125",
    "renewed_at": "3333333333.125",
}


def ticks(interval_s: float) -> int:
    n = round(interval_s / TICK_S)
    if n < 1 or not math.isclose(n * TICK_S, interval_s):
        raise ValueError(f"{interval_s}s is not a multiple of the {TICK_S}s tick")
    return n


class Template:
    """A model's JSON with the sentinel values cut out, to be put back by ``render``."""

    def __init__(self, text: str) -> None:
        found = sorted((text.index(s), name) for name, s in SENTINELS.items() if s in text)
        self.parts: list[bytes] = []
        self.names: list[str] = []
        pos = 0
        for at, name in found:
            self.parts.append(text[pos:at].encode())
            self.names.append(name)
            pos = at + len(SENTINELS[name])
        self.tail = text[pos:].encode()

    def render(self, values: dict[str, bytes]) -> bytes:
        out: list[bytes] = []
        for part, name in zip(self.parts, self.names, strict=True):
            out += (part, values[name])
        out.append(self.tail)
        return b"".join(out)


def gauges(active: bool) -> dict[str, float]:
    """What an idle replicator puts on the board (source on the Active, target otherwise)."""
    if active:
        return {
            "replicating_as_source": 1.0,
            "send_queue_batches": 0,
            "send_queue_bytes": 0,
            "send_queue_oldest_age_s": 0.0,
        }
    return {
        "replicating_as_source": 0.0,
        "receive_queue_batches": 0,
        "receive_queue_bytes": 0,
        "receive_queue_oldest_age_s": 0.0,
        "applied_epoch": 1,
        "applied_seq": 0,
    }


def heartbeat_template(cluster: str, node: str, identity: Identity, role: Role) -> Template:
    active = role is Role.ACTIVE
    beat = Heartbeat(
        cluster=cluster,
        node=node,
        identity=identity,
        role=role,
        epoch=1,
        health=HealthStatus.OK,
        checks={CHECK: HealthStatus.OK},
        queues=gauges(active),
        serve_until=float(SENTINELS["serve_until"]) if active else None,
        seq=int(SENTINELS["seq"]),
        interval_s=HEARTBEAT_S,
        sent_at=float(SENTINELS["sent_at"]),
    )
    return Template(beat.to_bytes().decode())


def lease_template(node: str, role: Role) -> Template:
    active = role is Role.ACTIVE
    record = LeaseRecord(
        node=node,
        ttl_s=LEASE.ttl_s,
        renewed_at=float(SENTINELS["renewed_at"]),
        role=role,
        epoch=1,
        fenced=False,
        failover_timeout_s=FAILOVER.timeout_s,
        failover_mode=FAILOVER.mode,
        serve_until=float(SENTINELS["serve_until"]) if active else None,
        public=PUBLIC,
    )
    return Template(record.model_dump_json())


def num(value: float) -> bytes:
    return repr(value).encode()


class Node:
    """One impersonated node of the bulk generator."""

    __slots__ = (
        "active",
        "cluster",
        "hb",
        "hb_subject",
        "lease",
        "lease_subject",
        "name",
        "nc",
        "renewed_wall",
        "reply",
        "role_payload",
        "role_subject",
        "seq",
        "stopped",
    )

    def __init__(self, cluster: str, name: str, identity: Identity, role: Role) -> None:
        self.cluster, self.name = cluster, name
        self.active = role is Role.ACTIVE
        self.hb = heartbeat_template(cluster, name, identity, role)
        self.hb_subject = heartbeat_subject(cluster, name)
        self.lease = lease_template(name, role)
        self.lease_subject = f"$KV.{LEASES_BUCKET}.{node_lease_key(cluster, name)}"
        self.seq = 0
        self.renewed_wall = time.time()
        self.stopped = False
        self.nc: Any = None
        self.reply = ""
        self.role_subject = ""
        self.role_payload = b""

    def heartbeat(self, now: float) -> bytes:
        self.seq += 1
        until = num(self.renewed_wall + GUARD_AFTER_S)
        return self.hb.render(
            {"seq": str(self.seq).encode(), "sent_at": num(now), "serve_until": until}
        )

    def renewal(self, now: float) -> bytes:
        self.renewed_wall = now
        return self.lease.render({"renewed_at": num(now), "serve_until": num(now + GUARD_AFTER_S)})


def role_request(direct: bool, cluster: str) -> tuple[str, bytes]:
    """The subject and payload of nats-py's ``kv.get`` of the cluster's role record."""
    stream, subject = f"KV_{ROLES_BUCKET}", f"$KV.{ROLES_BUCKET}.{role_key(cluster)}"
    if direct:
        return f"$JS.API.DIRECT.GET.{stream}.{subject}", b""
    return f"$JS.API.STREAM.MSG.GET.{stream}", json.dumps({"last_by_subj": subject}).encode()


def run_bulk(
    url: str, clusters: list[str], sampled: list[str], conn: Connection, connections: int
) -> None:
    """Process entry: every node of ``clusters`` except the renewals of the ``sampled`` Actives'
    (``cluster.node``), until told ``quit`` on ``conn``."""
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    asyncio.run(_bulk(url, clusters, set(sampled), conn, connections))


async def _bulk(
    url: str, clusters: list[str], sampled: set[str], conn: Connection, connections: int
) -> None:
    settings = load_bus_settings(servers=url)
    buses = [await Bus.connect(settings, name=f"scale-gen-{k}") for k in range(connections)]
    info = await buses[0].js.stream_info(f"KV_{ROLES_BUCKET}")
    direct = bool(info.config.allow_direct)
    replies = [0]

    async def replied(msg: Any) -> None:
        replies[0] += 1

    for k, bus in enumerate(buses):
        await bus.nc.subscribe(f"_INBOX.scale-{k}.*", cb=replied)
    nodes: list[Node] = []
    for cluster in clusters:
        for name, identity, role in NODES:
            node = Node(cluster, name, identity, role)
            k = len(nodes) % connections
            node.nc, node.reply = buses[k].nc, f"_INBOX.scale-{k}.{len(nodes)}"
            node.role_subject, node.role_payload = role_request(direct, cluster)
            nodes.append(node)
    hb_n, lease_n, role_n = ticks(HEARTBEAT_S), ticks(LEASE.renew_every_s), ticks(ROLE_POLL_S)
    beats = [nodes[p::hb_n] for p in range(hb_n)]
    renewals = [
        [n for n in nodes[p::lease_n] if f"{n.cluster}.{n.name}" not in sampled]
        for p in range(lease_n)
    ]
    reads = [nodes[p::role_n] for p in range(role_n)]
    count = {"heartbeats": 0, "renewals": 0, "role_reads": 0, "ticks": 0, "late_ticks": 0}
    max_late = 0.0
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    started = time.monotonic()
    conn.send(("ready", direct))
    tick = 0
    while True:
        while conn.poll():
            command = conn.recv()
            if command[0] == "quit":
                for bus in buses:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(bus.nc.close(), 5)
                return
            if command[0] == "stop":  # the cluster's Active dies: nothing more from it
                for node in nodes:
                    if node.cluster == command[1] and node.active:
                        node.stopped = True
                conn.send(("stopped", time.time()))
            elif command[0] == "stats":
                conn.send(
                    (
                        "stats",
                        {
                            **count,
                            "role_replies": replies[0],
                            "max_late_s": max_late,
                            "elapsed_s": time.monotonic() - started,
                        },
                    )
                )
        now = time.time()
        for node in beats[tick % hb_n]:
            if not node.stopped:
                await node.nc.publish(node.hb_subject, node.heartbeat(now))
                count["heartbeats"] += 1
        for node in renewals[tick % lease_n]:
            if not node.stopped:
                await node.nc.publish(node.lease_subject, node.renewal(now))
                count["renewals"] += 1
        for node in reads[tick % role_n]:
            if not node.stopped:
                await node.nc.publish(node.role_subject, node.role_payload, reply=node.reply)
                count["role_reads"] += 1
        tick += 1
        count["ticks"] += 1
        next_at += TICK_S
        late = loop.time() - next_at
        if late > 0:  # keep the rhythm, never catch up at once (as the agent's loops do)
            count["late_ticks"] += 1
            max_late = max(max_late, late)
            next_at = loop.time()
        await asyncio.sleep(max(0.0, next_at - loop.time()))
