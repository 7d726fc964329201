"""What the chaos checkers read of the outside world, recorded while the nemesis runs.

- ``BusWatch``: a real NATS connection (to all three servers) with a core subscription on the
  cluster's event subjects (``tandem.evt.<cluster>.>``): every event a live subscriber saw,
  with its ``Nats-Msg-Id``. It also reads the ``TANDEM_EVENTS`` stream whole (ordered
  consumer), the stream leader and the role record in KV ``tandem_roles``.
- ``Workload``: a client that PUTs numbered records (``/items/rec-000123``) through the public
  port and records which were acknowledged (HTTP 2xx) and when.
- ``Sampler``: GET ``/health`` on each node's demo app port and on the public port every
  100 ms: who serves at each instant (two at once is a split).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import nats
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy

from pair_state import http_status
from tandem.events.connection import connect_options
from tandem.events.settings import BusSettings
from tandem.events.subjects import EVENTS_STREAM, ROLES_BUCKET, events_filter, role_key

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Seen:
    """One event as a subscriber saw it (live) or as the stream holds it."""

    id: str
    type: str
    node: str | None
    occurred_at: str
    correlation_id: str | None
    payload: dict[str, Any]
    received: float
    seq: int = 0


def _parse(msg: Msg, seq: int = 0) -> Seen:
    try:
        body = json.loads(msg.data)
    except ValueError:
        body = {}
    msg_id = (msg.headers or {}).get("Nats-Msg-Id") or str(body.get("id", ""))
    return Seen(
        msg_id,
        str(body.get("type", "?")),
        body.get("node"),
        str(body.get("occurred_at", "")),
        body.get("correlation_id"),
        body.get("payload") or {},
        time.time(),
        seq,
    )


class BusWatch:
    """A NATS client on a loop of its own (a thread): sync methods for the harness."""

    def __init__(self, settings: BusSettings, cluster: str) -> None:
        self.settings, self.cluster = settings, cluster
        self.seen: list[Seen] = []
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="buswatch")
        self.thread.start()
        self.nc: Any = None

    def call(self, make: Callable[[], Awaitable[T]], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(make(), self.loop).result(timeout)  # type: ignore[arg-type]

    def start(self) -> BusWatch:
        async def connect() -> None:
            options = connect_options(self.settings, name="chaos-watch")
            options.update(max_reconnect_attempts=-1, reconnect_time_wait=0.2, connect_timeout=2)
            self.nc = await nats.connect(**options)

            async def on(msg: Msg) -> None:
                self.seen.append(_parse(msg))

            await self.nc.subscribe(events_filter(self.cluster), cb=on)

        self.call(connect)
        return self

    def close(self) -> None:
        async def close() -> None:
            if self.nc is not None:
                with contextlib.suppress(Exception):
                    await self.nc.close()

        with contextlib.suppress(Exception):
            self.call(close, 15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def _retry(self, what: str, attempt: Callable[[], Awaitable[T]], for_s: float) -> T:
        deadline = time.monotonic() + for_s
        while True:
            try:
                return await attempt()
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{what}: no answer within {for_s}s: {exc!r}") from exc
                await asyncio.sleep(0.3)

    def stream_leader(self, for_s: float = 20) -> str | None:
        async def ask() -> str | None:
            info = await self.nc.jetstream(timeout=2).stream_info(EVENTS_STREAM)
            return info.cluster.leader if info.cluster is not None else None

        return self.call(lambda: self._retry("stream info", ask, for_s))

    def stored(self, for_s: float = 60) -> list[Seen]:
        """Every message of the cluster's events in ``TANDEM_EVENTS``, in stream order."""

        async def read() -> list[Seen]:
            js = self.nc.jetstream(timeout=5)
            info = await js.stream_info(EVENTS_STREAM)
            if info.state.messages == 0:
                return []
            sub = await js.subscribe(
                events_filter(self.cluster), ordered_consumer=True, deliver_policy=DeliverPolicy.ALL
            )
            out: list[Seen] = []
            try:
                while True:
                    msg = await sub.next_msg(timeout=5)
                    out.append(_parse(msg, msg.metadata.sequence.stream))
                    if msg.metadata.num_pending == 0:
                        return out
            finally:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

        return self.call(lambda: self._retry("reading TANDEM_EVENTS", read, for_s), for_s + 30)

    def role_record(self, for_s: float = 30) -> dict[str, Any] | None:
        async def read() -> dict[str, Any] | None:
            kv = await self.nc.jetstream(timeout=3).key_value(ROLES_BUCKET)
            try:
                entry = await kv.get(role_key(self.cluster))
            except nats.js.errors.KeyNotFoundError:
                return None
            return json.loads(entry.value) if entry.value else None

        return self.call(lambda: self._retry("reading tandem_roles", read, for_s), for_s + 10)


@dataclass
class Write:
    n: int
    sent: float
    acked: float | None = None
    status: int | None = None

    @property
    def name(self) -> str:
        return f"rec-{self.n:06d}"


@dataclass
class Workload:
    """PUT /items/rec-NNNNNN through the public port every ``every`` s, in a thread."""

    port: int
    every: float = 0.05
    host: str = "127.0.0.1"
    writes: list[Write] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Workload:
        self._thread = threading.Thread(target=self._run, daemon=True, name="workload")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            w = Write(len(self.writes), time.time())
            self.writes.append(w)
            conn = http.client.HTTPConnection(self.host, self.port, timeout=1.0)
            try:
                conn.request(
                    "PUT", f"/items/{w.name}", body=w.name.encode(), headers={"Connection": "close"}
                )
                response = conn.getresponse()
                response.read()
                w.status = response.status
                if 200 <= response.status < 300:
                    w.acked = time.time()
            except (OSError, http.client.HTTPException):
                pass
            finally:
                conn.close()
            self._stop.wait(self.every)

    def acked(self) -> list[Write]:
        return [w for w in list(self.writes) if w.acked is not None]


@dataclass
class Sample:
    t: float
    serving: dict[str, bool]
    public: bool


@dataclass
class Sampler:
    """Who answers /health, every ``every`` s: each node's app port and the public port."""

    app_ports: dict[str, int]
    public_port: int
    every: float = 0.1
    public_host: str = "127.0.0.1"
    #: node -> "does it serve now?"; default: its demo app answers /health on loopback.
    probe: Callable[[str], bool] | None = None
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Sampler:
        self._thread = threading.Thread(target=self._run, daemon=True, name="sampler")
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.is_set():
            t = time.time()
            if self.probe is not None:
                serving = {n: self.probe(n) for n in self.app_ports}
            else:
                serving = {n: http_status(p) == 200 for n, p in self.app_ports.items()}
            public = http_status(self.public_port, host=self.public_host) == 200
            self.samples.append(Sample(t, serving, public))
            self._stop.wait(max(0.0, self.every - (time.time() - t)))
