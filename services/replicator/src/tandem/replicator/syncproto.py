"""Verify & synchronize over the bus: the target serves manifests of its replica, the source
compares and journals the differences through the normal send queue (so ordering with live
writes holds), pass after pass until a pass finds nothing to fix.

Subject ``tandem.sync.<cluster>.<node>`` (core NATS request; the manifest comes back in
chunks to the requester's inbox).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from tandem.events.bus import Bus
from tandem.events.names import check_name
from tandem.replicator import manifest
from tandem.replicator.manifest import Entry

log = logging.getLogger(__name__)


class TargetNotServingError(RuntimeError):
    """The target does not answer manifest requests (yet): after a role change it may still
    be starting, so a verify that meets this is retried, not an error."""


CHUNK = 512 * 1024


def sync_subject(cluster: str, node: str) -> str:
    return f"tandem.sync.{check_name(cluster, 'cluster name')}.{check_name(node, 'node name')}"


class ManifestServer:
    """Target side. ``wait_applied(upto)`` returns once the replica includes batch ``upto``;
    ``on_begin`` / ``on_end(ok, reason)`` tell the apply loop a verify started or ended."""

    def __init__(
        self,
        bus: Bus,
        cluster: str,
        node: str,
        replica_root: Path,
        *,
        wait_applied: Callable[[tuple[int, int], float], Awaitable[object]],
        on_begin: Callable[[], Awaitable[None]],
        on_end: Callable[[bool, str], Awaitable[None]],
    ) -> None:
        self.bus = bus
        self.subject = sync_subject(cluster, node)
        self.root = replica_root
        self.wait_applied = wait_applied
        self.on_begin = on_begin
        self.on_end = on_end
        self._sub: Subscription | None = None

    async def start(self) -> None:
        self._sub = await self.bus.nc.subscribe(self.subject, cb=self._on_request)

    async def stop(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):  # the connection may be closed already
                await self._sub.unsubscribe()
            self._sub = None

    async def _on_request(self, msg: Msg) -> None:
        try:
            request = json.loads(msg.data)
            if request.get("op") == "end":
                await self.on_end(bool(request.get("ok")), str(request.get("reason", "")))
                await msg.respond(b"{}")
                return
            await self.on_begin()
            upto = tuple(request["upto"])
            await self.wait_applied((int(upto[0]), int(upto[1])), float(request.get("timeout", 60)))
            data = await asyncio.to_thread(lambda: manifest.encode(manifest.scan(self.root)))
        except Exception as exc:
            if isinstance(exc, TimeoutError):  # the journal is late (a fault elsewhere):
                log.warning("manifest request not answered: %s", exc)  # the source retries
            else:
                log.exception("manifest request failed")
            await self.bus.nc.publish(
                msg.reply, b"", headers={"Tandem-Error": " ".join(str(exc).split())}
            )
            return
        chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)] or [b""]
        for i, chunk in enumerate(chunks):
            headers = {"Tandem-Chunk": str(i), "Tandem-Chunks": str(len(chunks))}
            await self.bus.nc.publish(msg.reply, chunk, headers=headers)


async def fetch_manifest(
    bus: Bus, cluster: str, node: str, upto: tuple[int, int], timeout: float = 120.0
) -> dict[str, Entry]:
    """Ask ``node`` for its manifest once it has applied ``upto``; raise on error or timeout."""
    inbox = bus.nc.new_inbox()
    sub = await bus.nc.subscribe(inbox)
    try:
        body = json.dumps({"op": "manifest", "upto": list(upto), "timeout": timeout}).encode()
        await bus.nc.publish(sync_subject(cluster, node), body, reply=inbox)
        parts: dict[int, bytes] = {}
        total = None
        while total is None or len(parts) < total:
            msg = await sub.next_msg(timeout=timeout)
            h = msg.headers or {}
            if "Tandem-Error" in h:
                raise RuntimeError(f"{node} cannot send its manifest: {h['Tandem-Error']}")
            if "Tandem-Chunk" not in h:  # the server's "no responders" status
                raise TargetNotServingError(
                    f"{node} is not serving manifests (is it running as a target?)"
                )
            parts[int(h["Tandem-Chunk"])] = msg.data
            total = int(h["Tandem-Chunks"])
    finally:
        await sub.unsubscribe()
    return manifest.decode(b"".join(parts[i] for i in range(total)))


async def tell_end(bus: Bus, cluster: str, node: str, ok: bool, reason: str) -> None:
    body = json.dumps({"op": "end", "ok": ok, "reason": reason}).encode()
    await bus.nc.request(sync_subject(cluster, node), body, timeout=10)
