"""The replication benchmark's harness (bench/replication.py): its processes (the two nodes of
a pair, a bare FUSE passthrough, the lag writer and poller), each pair's nats-server, and what
the bus says about a pair (started, settled, alerts and states seen)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from repl_util import (
    MB,
    BenchError,
    MiB,
    Sizes,
    cpu_seconds,
    io_written,
    tail,
    unmount_leftovers,
)
from secured_bus import start_secured_server
from tandem.events.bus import Bus
from tandem.events.registry import decode_event
from tandem.events.roles import claim_first_role
from tandem.events.settings import load_bus_settings, load_stream_settings
from tandem.events.subjects import EVENTS_STREAM, ROLES_BUCKET

HERE = Path(__file__).resolve().parent
LOG_LEVEL = "WARNING"

log = logging.getLogger("bench.replication")


# -- processes: nodes, passthrough, lag writer and poller -------------------------------------


class Bench:
    """One run's harness: its folders, sizes and processes; the scenarios (repl_throughput,
    repl_latency) measure through it, and it keeps what each pair saw (``observations``)."""

    def __init__(
        self, root: Path, sizes: Sizes, profile: Path | None = None, lag_rate: float = 20e6
    ) -> None:
        self.root = root
        self.sizes = sizes
        self.lag_rate = lag_rate
        self.profile = profile
        self.logs: dict[int, Path] = {}
        #: Per pair: alerts, non-in-sync states, refused batches seen on the bus (none expected).
        self.observations: dict[str, dict[str, Any]] = {}

    async def spawn(
        self, script: str, args: list[str], log_path: Path, *, pipe: bool = False
    ) -> asyncio.subprocess.Process:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as logf:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(HERE / script),
                *args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if pipe else logf,
                stderr=logf,
            )
        self.logs[proc.pid] = log_path
        return proc

    async def stop(self, proc: asyncio.subprocess.Process | None, timeout: float = 45.0) -> None:
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            log.warning("process %s did not stop in %.0fs; killing it", proc.pid, timeout)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.wait_for(proc.wait(), 10)

    async def ready_line(self, proc: asyncio.subprocess.Process, what: str) -> None:
        assert proc.stdout is not None
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
        except TimeoutError:
            line = b""
        if line.strip() != b"READY":
            raise BenchError(f"{what} did not start:\n{tail(self.logs[proc.pid])}")

    def sides(self, name: str) -> tuple[Path, Path]:
        src, dst = self.root / name / "a" / "data", self.root / name / "b" / "data"
        src.mkdir(parents=True)
        dst.mkdir(parents=True)
        return src, dst

    @contextlib.asynccontextmanager
    async def pair(
        self, name: str, src: Path, dst: Path, capture: str, **source: Any
    ) -> AsyncIterator[Bus]:
        """A fresh nats-server, a target node and a source node, both live on return."""
        base = self.root / name
        cluster = f"bench-{name}"
        # Each measurement starts with no dirty pages of the one before: their writeback
        # would otherwise land in this one's time.
        await asyncio.to_thread(os.sync)
        server = await asyncio.to_thread(
            start_secured_server, base / "nats", name=cluster, sync_always=True
        )
        bus: Bus | None = None
        procs: list[asyncio.subprocess.Process] = []
        try:
            bus = await Bus.connect(load_bus_settings(servers=server.url), name="bench")
            await bus.provision(load_stream_settings())
            # The role record the source would claim at first pairing, written upfront so that
            # the target can start first (a Passive waits for it).
            await claim_first_role(await bus.kv(ROLES_BUCKET), cluster, "primary", "bench")
            nodes = [
                ("target", {"node": "secondary", "peers": ["primary"], "protected_root": dst}),
                (
                    "source",
                    {
                        "node": "primary",
                        "peers": ["secondary"],
                        "protected_root": src,
                        "capture": capture,
                        "initial_role": "active",
                        **source,
                    },
                ),
            ]
            for side, settings in nodes:
                spec = {
                    "kind": "node",
                    "url": server.url,
                    "log_level": LOG_LEVEL,
                    "settings": {"cluster": cluster, **settings},
                }
                args = [json.dumps(spec, default=str)]
                procs.append(await self.spawn("repl_node.py", args, base / f"{side}.log"))
                # The target first: the source's verify at start then finds it serving.
                await self.wait_started(bus, cluster, procs, timeout=60)
            start_verify_s = await self.wait_settled(bus, cluster, procs)
            assert server.process is not None
            pids = {"target": procs[0].pid, "source": procs[1].pid, "nats": server.process.pid}
            cpu0 = {k: cpu_seconds(pid) for k, pid in pids.items()}
            io0 = {k: io_written(pid) for k, pid in pids.items()}
            async with self.profiled(name, {k: pids[k] for k in ("source", "target")}):
                yield bus
            found = await self.observe(bus, cluster)
            found["start_verify_s"] = start_verify_s
            found["cpu_s"] = {k: round(cpu_seconds(pid) - cpu0[k], 2) for k, pid in pids.items()}
            found["write_bytes_mb"] = {
                k: round((io_written(pid) - io0[k]) / MB, 1) for k, pid in pids.items()
            }
            self.observations[name] = found
        finally:
            for proc in reversed(procs):  # the source first: it drains, then the target
                await self.stop(proc)
            if bus is not None:
                with contextlib.suppress(Exception):
                    await bus.close()
            await asyncio.to_thread(server.stop)
            unmount_leftovers(base)

    @contextlib.asynccontextmanager
    async def profiled(self, name: str, pids: dict[str, int]) -> AsyncIterator[None]:
        """With ``--profile DIR``: py-spy (all threads, native off) on each node meanwhile."""
        spy = shutil.which("py-spy")
        if self.profile is None or spy is None:
            if self.profile is not None:
                log.warning("--profile: py-spy is not on PATH; no profile taken")
            yield
            return
        self.profile.mkdir(parents=True, exist_ok=True)
        spies = []
        for side, pid in pids.items():
            out = self.profile / f"{name}-{side}.txt"
            cmd = [spy, "record", "--pid", str(pid), "--rate", "100", "--threads"]
            cmd += ["--format", "raw", "--output", str(out), "--nonblocking"]
            with (self.profile / f"{name}-{side}.log").open("ab") as logf:
                spies.append(await asyncio.create_subprocess_exec(*cmd, stdout=logf, stderr=logf))
        await asyncio.sleep(0.5)  # attached
        try:
            yield
        finally:
            for proc in spies:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGINT)
            for proc in spies:  # py-spy writes its output on SIGINT
                try:
                    await asyncio.wait_for(proc.wait(), 30)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()

    @contextlib.asynccontextmanager
    async def passthrough(self, name: str, src: Path) -> AsyncIterator[None]:
        spec = {"kind": "passthrough", "source": str(src), "log_level": LOG_LEVEL}
        base = self.root / name
        await asyncio.to_thread(os.sync)  # as in ``pair``: no earlier writeback in its time
        proc = await self.spawn(
            "repl_node.py", [json.dumps(spec)], base / "passthrough.log", pipe=True
        )
        try:
            await self.ready_line(proc, "the FUSE passthrough")
            yield
        finally:
            await self.stop(proc)
            unmount_leftovers(base)

    async def events(self, bus: Bus, cluster: str, kind: str) -> list[Any]:
        info = await bus.js.stream_info(EVENTS_STREAM)
        out: list[Any] = []
        if info.state.messages == 0:
            return out
        suffix = f".{cluster}.{kind}"
        for seq in range(info.state.first_seq, info.state.last_seq + 1):
            msg = await bus.js.get_msg(EVENTS_STREAM, seq)
            if msg.subject and msg.subject.endswith(suffix) and msg.data:
                out.append(decode_event(msg.data))
        return out

    async def wait_started(
        self, bus: Bus, cluster: str, procs: list[asyncio.subprocess.Process], timeout: float
    ) -> None:
        deadline = time.monotonic() + timeout
        while len(await self.events(bus, cluster, "ReplicationStarted")) < len(procs):
            for proc in procs:
                if proc.returncode is not None:
                    raise BenchError(
                        f"a node exited with {proc.returncode}:\n{tail(self.logs[proc.pid])}"
                    )
            if time.monotonic() > deadline:
                raise BenchError(f"{cluster}: the nodes did not start within {timeout:.0f}s")
            await asyncio.sleep(0.1)

    async def wait_settled(
        self, bus: Bus, cluster: str, procs: list[asyncio.subprocess.Process]
    ) -> float | None:
        """Wait for the verify & synchronize the source runs at start (if it runs one, it
        says so at once with ``SyncStarted``): measurements start on a pair in sync.
        Returns how long it took (None: no verify at start)."""
        t0 = time.monotonic()
        grace, timeout = 3.0, 60 + 2 * self.sizes.inc_bytes / MiB
        while True:
            started = await self.events(bus, cluster, "SyncStarted")
            done = await self.events(bus, cluster, "SyncCompleted")
            elapsed = time.monotonic() - t0
            if not started and elapsed > grace:
                return None
            if started and len(done) >= len(started) and done[-1].payload.ok:
                return round(elapsed, 2)
            for proc in procs:
                if proc.returncode is not None:
                    raise BenchError(
                        f"a node exited with {proc.returncode}:\n{tail(self.logs[proc.pid])}"
                    )
            if elapsed > timeout:
                reasons = [d.payload.reason for d in done]
                raise BenchError(f"{cluster}: no verify at start succeeded in time: {reasons}")
            await asyncio.sleep(0.1)

    async def observe(self, bus: Bus, cluster: str) -> dict[str, Any]:
        alerts = await self.events(bus, cluster, "AlertRaised")
        states = await self.events(bus, cluster, "ReplicationStateChanged")
        refused = await self.events(bus, cluster, "ReplicaRejectedBatch")
        return {
            "alerts": [f"{a.payload.code}: {a.payload.message}" for a in alerts],
            "states": [f"{s.payload.state}: {s.payload.reason}" for s in states],
            "refused_batches": len(refused),
        }
