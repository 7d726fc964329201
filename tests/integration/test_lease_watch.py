"""The orchestrator follows ``tandem_leases`` with one watch of the bucket (issue 24), on a
real nats-server: each key's last value first, then every write; ``known_until`` moves only
when everything stored has been delivered; and a watch cut off from the server (a TCP
proxy between them is cut, as a partition would) catches up after it without missing a
lease that expired meanwhile, or taking a lease renewed meanwhile for silence."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from helpers import eventually, running
from tandem.events.bucket_watch import BucketWatch
from tandem.events.bus import Bus
from tandem.events.embedded import NatsServer
from tandem.events.settings import load_bus_settings
from tandem.events.subjects import LEASES_BUCKET, node_lease_key
from tandem.orchestrator.liveness import Liveness


class CuttableProxy:
    """TCP from a local port to the server; ``cut`` drops every connection and refuses new
    ones until ``heal`` (the client sees a partition)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.cut_off = False
        self._pairs: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut_off:
            writer.close()
            return
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self._pairs |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> None:
        self.cut_off = True
        for w in list(self._pairs):
            w.close()
        self._pairs.clear()

    def heal(self) -> None:
        self.cut_off = False

    async def stop(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()


@contextlib.asynccontextmanager
async def proxied_bus(nats_server: NatsServer) -> AsyncIterator[tuple[CuttableProxy, Bus]]:
    proxy = CuttableProxy(int(nats_server.client_port or 0))
    await proxy.start()
    settings = load_bus_settings(servers=[f"nats://127.0.0.1:{proxy.port}"])
    bus = await Bus.connect(settings, name="tandem-test-proxied")
    try:
        yield proxy, bus
    finally:
        await proxy.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(bus.close(), 5)


async def test_the_watch_gives_each_keys_last_value_then_every_write(bus: Bus) -> None:
    kv = await bus.kv(LEASES_BUCKET)
    await kv.put("node.erp.a", b"a1")
    await kv.put("node.erp.a", b"a2")
    await kv.put("node.erp.b", b"b1")
    writes: list[tuple[str, bytes, bool]] = []
    watch = BucketWatch(bus, LEASES_BUCKET, lambda k, r, v, d: writes.append((k, v, d)))
    assert watch.known_until is None
    async with running(watch.run()):
        await eventually(lambda: watch.known_until is not None, 10, "the watch to catch up")
        assert writes == [("node.erp.a", b"a2", False), ("node.erp.b", b"b1", False)]
        mark = watch.clock()
        await kv.put("node.erp.b", b"b2")
        await kv.delete("node.erp.a")
        await eventually(lambda: (watch.known_until or 0) > mark, 10, "the watch to move on")
        assert writes[2:] == [("node.erp.b", b"b2", False), ("node.erp.a", b"", True)]


async def test_a_watch_cut_off_catches_up_without_missing_an_expiry(
    bus: Bus, nats_server: NatsServer
) -> None:
    """Two nodes renew their lease every 0.2 s (no heartbeats: the lease alone tells). The
    orchestrator's connection is cut for 4 s, and meanwhile ``dead`` stops renewing. While
    cut, nobody is judged gone (it cannot know); once healed, ``dead`` is gone (its expiry is
    not missed) and ``alive`` never was (its renewals during the cut are caught up)."""
    kv = await bus.kv(LEASES_BUCKET)
    renewing = {"alive": True, "dead": True}

    async def renew() -> None:
        while True:
            for node, on in renewing.items():
                if on:
                    await kv.put(node_lease_key("erp", node), b'{"ttl_s": 1.0}')
            await asyncio.sleep(0.2)

    async with proxied_bus(nats_server) as (proxy, orch_bus), running(renew()):
        liveness = Liveness(orch_bus, default_timeout_s=1.0)
        for node in renewing:
            liveness.watch("erp", node)
        verdicts: list[tuple[str, str, str]] = []  # (phase, node, why gone)
        phase = "before"

        async def sample() -> None:
            while True:
                for node in renewing:
                    verdicts.append((phase, node, liveness.gone("erp", node)))
                await asyncio.sleep(0.05)

        async with running(liveness.run()), running(sample()):
            await eventually(lambda: liveness.watching_since is not None, 10, "the watch")
            await asyncio.sleep(2.0)  # longer than the timeout: both renew, nobody gone
            phase = "cut"
            proxy.cut()
            renewing["dead"] = False
            await asyncio.sleep(4.0)
            phase = "healed"
            proxy.heal()
            await eventually(lambda: liveness.gone("erp", "dead") != "", 30, "dead gone")
            await asyncio.sleep(1.5)  # alive stays alive after the catch-up too

    assert [v for v in verdicts if v[2] and (v[1] == "alive" or v[0] != "healed")] == []
    assert any(p == "healed" and n == "dead" and why for p, n, why in verdicts)
    assert any(p == "cut" for p, _, _ in verdicts)  # it was sampled while cut off
