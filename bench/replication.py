"""Replication benchmark: a source node and a target node on loopback, one embedded nats-server
(file storage, ``sync_interval: always``) per pair, each figure next to a baseline measured in
the same run.

    python bench/replication.py [--quick] [--out bench/results/replication.json]
                                [--only seq,incremental,lag,sync] [--tmp DIR] [--keep]
                                [--profile DIR] [--lag-mb-s 20]

``--profile DIR`` samples each node with py-spy (if on PATH) while a pair is measured;
``--keep`` keeps the folders and node logs; ``--lag-mb-s`` changes the lag scenario's rate
(diagnosis only: the target is defined at 20 MB/s).

Scenarios (sizes: full / ``--quick``):

1. sequential: 1024 / 64 MiB written as 1 MiB ``os.write`` calls (one file, then fsync) through
   an ``intercept`` source node, timed until the replica holds all of it (polled: its size
   and last MiB, which the target applies last; then the whole file's hash is checked, untimed);
   baseline: the same
   writes through the same ``InterceptCapture`` with a sink that discards every op (FUSE
   passthrough, no journal). Target: ``ratios.intercept_over_passthrough`` >= 0.65. For
   context: ``disk_seq_mb_s`` (the same writes to a plain folder, no FUSE) and
   ``seq_disk_write_amplification`` (bytes source, nats-server and target wrote per byte: on
   one machine they share one disk, which two hosts would not).
2. incremental: 64 files (1 GiB / 64 MiB in all) in sync on both sides; 5 % of their 64 KiB
   blocks are rewritten (seeded choice and content, the same for every method); time until
   the replica matches, for ``watch`` and ``intercept``; baseline: ``rsync -a --no-whole-file
   --inplace`` of the same change (the rsync command alone is timed). Target: rsync time over
   ours >= 1.5.
3. lag: 4 KiB writes at random 4 KiB slots of a 64 MiB file, paced at 20 MB/s for 30 / 10 s
   through an intercept pair; each write carries its sequence number, a poller process maps
   the replica file and stamps when each write shows up (every 1 ms). Target: p99 <= 100 ms.
   ``lag_achieved_mb_s`` says what the writer reached; ``fuse_passthrough_4k_mb_s`` is the
   ceiling: one unpaced writer's 4 KiB random writes through a bare FUSE passthrough.
4. sync mode: 4 KiB ``pwrite`` + ``fsync`` on the mount, 500 / 200 times, with
   ``mode="sync", sync_policy="block"`` against plain async replication (both intercept pairs
   with a running target). Target: p99 added by sync mode <= 3 ms.

Each node runs in a process of its own (bench/repl_node.py), as the replicator service does on
each node; the lag writer and poller too (bench/repl_lag.py). Both nodes, the nats-server and
the writers share this machine's CPUs and disk, which a real pair (two hosts) would not. The
role record is written before the nodes start (the target can then start first), and every
measurement waits for the source's verify & synchronize at start to complete. Per pair, the
JSON's ``observations`` hold the alerts and replica states seen on the bus, and the CPU time
and the kernel's ``write_bytes`` of source, target and nats-server while measuring (counted
per page cache folio: with large folios, small random writes are overstated several times).
MB = 10^6 bytes. Needs FUSE (/dev/fuse, fuse3) and rsync (apt-get install rsync).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import math
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from array import array
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tandem.events.bus import Bus
from tandem.events.embedded import NatsServer
from tandem.events.registry import decode_event
from tandem.events.roles import claim_first_role
from tandem.events.settings import load_bus_settings, load_stream_settings
from tandem.events.subjects import EVENTS_STREAM, ROLES_BUCKET

HERE = Path(__file__).resolve().parent
MiB = 1 << 20
MB = 1e6
SEED = 20240611
BLOCK = 64 << 10  # the incremental scenario's block (the watch backend's block size)
LOG_LEVEL = "WARNING"

#: name -> (metric or ratio it applies to, "min" or "max", bound)
TARGETS: dict[str, tuple[str, str, float]] = {
    "intercept_over_passthrough": ("ratios.intercept_over_passthrough", "min", 0.65),
    "rsync_over_watch": ("ratios.rsync_over_watch", "min", 1.5),
    "rsync_over_intercept": ("ratios.rsync_over_intercept", "min", 1.5),
    "lag_ms_p99": ("metrics.lag_ms_p99", "max", 100.0),
    "sync_added_ms_p99": ("ratios.sync_added_ms_p99", "max", 3.0),
}

log = logging.getLogger("bench.replication")


@dataclass(frozen=True)
class Sizes:
    seq_mib: int
    inc_bytes: int
    lag_s: float
    sync_writes: int

    @classmethod
    def of(cls, quick: bool) -> Sizes:
        if quick:
            return cls(seq_mib=64, inc_bytes=64 * MiB, lag_s=10.0, sync_writes=200)
        return cls(seq_mib=1024, inc_bytes=1024 * MiB, lag_s=30.0, sync_writes=500)


# -- helpers ----------------------------------------------------------------------------------


class BenchError(RuntimeError):
    pass


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (``inf`` entries, e.g. writes never seen, count as such)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def ms(seconds: float) -> float | None:
    return None if not math.isfinite(seconds) else round(seconds * 1000, 3)


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(4 * MiB):
            h.update(chunk)
    return h.hexdigest()


def folder_digests(root: Path) -> dict[str, str]:
    return {p.name: file_digest(p) for p in sorted(root.iterdir()) if p.is_file()}


def write_zeros(path: Path, size: int) -> None:
    """A fully allocated file of zeros (not sparse)."""
    chunk = bytes(4 * MiB)
    with path.open("wb") as f:
        for _ in range(size // len(chunk)):
            f.write(chunk)
        f.write(bytes(size % len(chunk)))


def random_4k_rate(path: Path, size: int, seconds: float) -> float:
    """Bytes per second of unpaced 4 KiB pwrites at random 4 KiB slots of ``path``."""
    rng = random.Random(SEED)
    buf = os.urandom(4096)
    slots = size // 4096
    fd = os.open(path, os.O_WRONLY)
    try:
        n, t0 = 0, time.monotonic()
        while time.monotonic() - t0 < seconds:
            for _ in range(64):
                os.pwrite(fd, buf, rng.randrange(slots) * 4096)
            n += 64
        return n * 4096 / (time.monotonic() - t0)
    finally:
        os.close(fd)


def pread_or_none(path: Path, size: int, offset: int) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        return os.pread(fd, size, offset)
    finally:
        os.close(fd)


async def until(pred: Callable[[], bool], timeout: float, what: str, every: float = 0.005) -> float:
    """Poll ``pred`` until true; return ``time.monotonic()`` of the first true answer."""
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return time.monotonic()
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(every)


def fuse_mounts_under(root: Path) -> list[str]:
    out = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            fields = line.split()
            if "-" not in fields:
                continue
            fstype = fields[fields.index("-") + 1]
            mp = fields[4].replace("\\040", " ")
            if fstype.startswith("fuse") and (mp == str(root) or mp.startswith(f"{root}/")):
                out.append(mp)
    return out


def unmount_leftovers(root: Path) -> None:
    """Last resort after a node died without unmounting (e.g. killed): lazy unmount."""
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    for mp in fuse_mounts_under(root):
        log.warning("unmounting a leftover FUSE mount at %s", mp)
        cmd = [tool, "-uz", mp] if tool else ["umount", "-l", mp]
        subprocess.run(cmd, capture_output=True, timeout=30, check=False)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (Linux), 0 if unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def io_written(pid: int) -> int:
    """Bytes a live process caused to be written to storage (Linux ``write_bytes``), 0 if
    unknown."""
    try:
        for line in Path(f"/proc/{pid}/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def read_lag_results(
    written_out: Path, seen_out: Path, n: int
) -> tuple[array[float], array[float], dict[str, float]]:
    written, seen = array("d"), array("d")
    with written_out.open("rb") as f:
        written.fromfile(f, n)
    with seen_out.open("rb") as f:
        seen.fromfile(f, n)
    cpu = {
        who: json.loads(Path(f"{out}.json").read_text())["cpu_s"]
        for who, out in (("writer", written_out), ("poller", seen_out))
    }
    return written, seen, cpu


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# -- processes: nodes, passthrough, lag writer and poller -------------------------------------


class Bench:
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
        server = NatsServer(store_dir=base / "nats", name=cluster, sync_always=True)
        await asyncio.to_thread(server.start)
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

    # -- 1. sequential --------------------------------------------------------------------------

    async def sequential(self) -> dict[str, Any]:
        n = self.sizes.seq_mib
        size = n * MiB
        bufs = [os.urandom(MiB) for _ in range(n)]
        expected = hashlib.sha256(b"".join(bufs)).hexdigest()

        def write_all(path: Path) -> tuple[float, float]:
            t0 = time.monotonic()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                for b in bufs:
                    os.write(fd, b)
                os.fsync(fd)
            finally:
                os.close(fd)
            return t0, time.monotonic()

        base = self.root / "seq-passthrough" / "data"
        base.mkdir(parents=True)
        async with self.passthrough("seq-passthrough", base):
            t0, t1 = await asyncio.to_thread(write_all, base / "seq.bin")
            if await asyncio.to_thread(file_digest, base / "seq.bin") != expected:
                raise BenchError("the passthrough file differs from what was written")
        passthrough_s = t1 - t0
        # The disk itself: the same writes to a plain folder of the same filesystem.
        plain = self.root / "seq-disk"
        plain.mkdir(parents=True)
        d0, d1 = await asyncio.to_thread(write_all, plain / "seq.bin")
        await asyncio.to_thread((plain / "seq.bin").unlink)
        disk_s = d1 - d0

        src, dst = self.sides("seq")
        replica = dst / "seq.bin"

        def complete() -> bool:  # applied in order: the last MiB is there last
            with contextlib.suppress(FileNotFoundError):
                if replica.stat().st_size == size:
                    return pread_or_none(replica, MiB, size - MiB) == bufs[-1]
            return False

        async with self.pair("seq", src, dst, "intercept"):
            t0, t_src = await asyncio.to_thread(write_all, src / "seq.bin")
            t_done = await until(complete, 60 + n, "the replica to hold the file")
            if await asyncio.to_thread(file_digest, replica) != expected:
                raise BenchError("the replica differs from what was written")
        written_mb = self.observations.get("seq", {}).get("write_bytes_mb", {})
        return {
            "metrics": {
                "intercept_seq_mb_s": round(size / MB / (t_done - t0), 1),
                "fuse_passthrough_seq_mb_s": round(size / MB / passthrough_s, 1),
                "intercept_seq_source_mb_s": round(size / MB / (t_src - t0), 1),
                "disk_seq_mb_s": round(size / MB / disk_s, 1),
                # Bytes the source, nats-server and target wrote to the (one, shared) disk per
                # byte replicated: the send spill, the journal, the receive queue, the replica.
                "seq_disk_write_amplification": round(sum(written_mb.values()) / (size / MB), 2),
            },
            "ratios": {
                "intercept_over_passthrough": round(passthrough_s / (t_done - t0), 3),
            },
            "details": {
                "bytes": size,
                "write_size": MiB,
                "intercept_s": round(t_done - t0, 3),
                "intercept_source_write_s": round(t_src - t0, 3),
                "replica_after_source_s": round(t_done - t_src, 3),
                "passthrough_s": round(passthrough_s, 3),
            },
        }

    # -- 2. incremental -------------------------------------------------------------------------

    async def incremental(self) -> dict[str, Any]:
        nfiles = 64
        file_size = self.sizes.inc_bytes // nfiles
        per_file = file_size // BLOCK
        rng = random.Random(SEED)
        picks = rng.sample(range(nfiles * per_file), round(0.05 * nfiles * per_file))
        changes = [
            (f"f{b // per_file:02d}.bin", (b % per_file) * BLOCK, rng.randbytes(BLOCK))
            for b in picks
        ]
        pristine = self.root / "inc-pristine"
        pristine.mkdir()

        def make_pristine() -> None:
            for i in range(nfiles):
                (pristine / f"f{i:02d}.bin").write_bytes(os.urandom(file_size))

        def copy(dst: Path) -> None:
            dst.mkdir(parents=True, exist_ok=True)
            for p in pristine.iterdir():
                shutil.copy2(p, dst / p.name)

        def rewrite(root: Path) -> None:
            for name, offset, data in changes:
                fd = os.open(root / name, os.O_WRONLY)
                try:
                    os.pwrite(fd, data, offset)
                finally:
                    os.close(fd)

        if shutil.which("rsync") is None:
            raise BenchError("rsync is missing (apt-get install rsync)")
        await asyncio.to_thread(make_pristine)
        after = self.root / "inc-expected"
        await asyncio.to_thread(copy, after)
        await asyncio.to_thread(rewrite, after)
        expected = await asyncio.to_thread(folder_digests, after)

        timings: dict[str, float] = {}
        rewrite_s: dict[str, float] = {}
        for capture in ("watch", "intercept"):
            name = f"inc-{capture}"
            src, dst = self.sides(name)
            await asyncio.to_thread(copy, src)
            await asyncio.to_thread(copy, dst)
            pending = set(range(len(changes)))

            def matches(dst: Path = dst, pending: set[int] = pending) -> bool:
                for i in list(pending):
                    cname, offset, data = changes[i]
                    if pread_or_none(dst / cname, BLOCK, offset) == data:
                        pending.discard(i)
                return not pending

            async with self.pair(name, src, dst, capture):
                t0 = time.monotonic()
                await asyncio.to_thread(rewrite, src)
                rewrite_s[capture] = time.monotonic() - t0
                t_done = await until(matches, 120 + self.sizes.inc_bytes / MiB, name, every=0.01)
                if await asyncio.to_thread(folder_digests, dst) != expected:
                    raise BenchError(f"{name}: the replica differs from the source")
            timings[capture] = t_done - t0

        old, new = self.root / "inc-rsync" / "old", self.root / "inc-rsync" / "new"
        await asyncio.to_thread(copy, old)
        await asyncio.to_thread(copy, new)
        await asyncio.to_thread(rewrite, new)
        cmd = ["rsync", "-a", "--no-whole-file", "--inplace", f"{new}/", f"{old}/"]
        t0 = time.monotonic()
        done = await asyncio.to_thread(subprocess.run, cmd, capture_output=True, timeout=1800)
        rsync_s = time.monotonic() - t0
        if done.returncode != 0:
            raise BenchError(f"rsync failed: {done.stderr.decode(errors='replace')}")
        if await asyncio.to_thread(folder_digests, old) != expected:
            raise BenchError("rsync: the copy differs from the source")
        return {
            "metrics": {
                "watch_incremental_s": round(timings["watch"], 3),
                "intercept_incremental_s": round(timings["intercept"], 3),
                "rsync_incremental_s": round(rsync_s, 3),
            },
            "ratios": {
                "rsync_over_watch": round(rsync_s / timings["watch"], 3),
                "rsync_over_intercept": round(rsync_s / timings["intercept"], 3),
            },
            "details": {
                "files": nfiles,
                "bytes": nfiles * file_size,
                "blocks_rewritten": len(changes),
                "block_size": BLOCK,
                "rsync": " ".join(cmd[:4]) + " SRC/ DST/",
                "rewrite_s": {k: round(v, 3) for k, v in rewrite_s.items()},
                "replica_after_rewrite_s": {
                    k: round(timings[k] - v, 3) for k, v in rewrite_s.items()
                },
            },
        }

    # -- 3. lag ---------------------------------------------------------------------------------

    async def lag(self) -> dict[str, Any]:
        size, rate, duration = 64 * MiB, self.lag_rate, self.sizes.lag_s
        n = int(rate * duration / 4096)
        src, dst = self.sides("lag")
        for side in (src, dst):
            await asyncio.to_thread(write_zeros, side / "lag.bin", size)
        common = {"n": n, "seed": SEED, "nslots": size // 4096}
        written_out, seen_out = self.root / "lag" / "written.bin", self.root / "lag" / "seen.bin"
        poll_spec = {
            **common,
            "path": str(dst / "lag.bin"),
            "out": str(seen_out),
            "timeout_s": 3 * duration + 60,
            "interval_s": 0.001,
        }
        write_spec = {**common, "path": str(src / "lag.bin"), "out": str(written_out)}
        write_spec["rate_bytes_s"] = rate
        # Baseline: how fast one unpaced writer gets 4 KiB random writes through a bare FUSE
        # passthrough on this machine (the ceiling for the paced writer below).
        base = self.root / "lag-passthrough" / "data"
        base.mkdir(parents=True)
        await asyncio.to_thread(write_zeros, base / "lag.bin", size)
        async with self.passthrough("lag-passthrough", base):
            ceiling = await asyncio.to_thread(
                random_4k_rate, base / "lag.bin", size, min(5.0, duration)
            )
        poller = writer = None
        async with self.pair("lag", src, dst, "intercept"):
            try:
                args = ["poll", json.dumps(poll_spec)]
                poller = await self.spawn("repl_lag.py", args, dst.parent / "poll.log", pipe=True)
                await self.ready_line(poller, "the lag poller")
                writer = await self.spawn(
                    "repl_lag.py", ["write", json.dumps(write_spec)], src.parent / "write.log"
                )
                await asyncio.wait_for(writer.wait(), 4 * duration + 60)
                if writer.returncode != 0:
                    raise BenchError(f"the lag writer failed:\n{tail(self.logs[writer.pid])}")
                await asyncio.wait_for(poller.wait(), 3 * duration + 90)
            finally:
                await self.stop(writer, 5)
                await self.stop(poller, 5)

            def same() -> bool:
                return file_digest(src / "lag.bin") == file_digest(dst / "lag.bin")

            await until(same, 60, "the lag replica to match", every=0.5)
        found = await asyncio.to_thread(read_lag_results, written_out, seen_out, n)
        written, seen, load_cpu = found
        lags = [s - w if s > 0 else math.inf for w, s in zip(written, seen, strict=True)]
        measured = sum(1 for x in lags if math.isfinite(x))
        span = written[-1] - written[0] + 4096 / rate
        by_second: dict[int, list[float]] = {}
        for w, x in zip(written, lags, strict=True):
            by_second.setdefault(int(w - written[0]), []).append(x)
        p99_by_second = [ms(percentile(v, 99)) for _, v in sorted(by_second.items())]
        return {
            "metrics": {
                "lag_ms_p50": ms(percentile(lags, 50)),
                "lag_ms_p99": ms(percentile(lags, 99)),
                "lag_ms_max": ms(max(lags)),
                "lag_writes_measured": measured,
                "lag_achieved_mb_s": round(n * 4096 / MB / span, 2),
                "fuse_passthrough_4k_mb_s": round(ceiling / MB, 2),
            },
            "ratios": {},
            "details": {
                "writes": n,
                "writes_never_seen": n - measured,
                "write_size": 4096,
                "file_size": size,
                "paced_mb_s": rate / MB,
                "achieved_mb_s": round(n * 4096 / MB / span, 2),
                "duration_s": round(span, 2),
                "poll_interval_ms": 1,
                "lag_ms_p99_by_second": p99_by_second,
                "cpu_s": load_cpu,
                "note": "writes never seen count as infinite lag in the percentiles",
            },
        }

    # -- 4. sync mode ---------------------------------------------------------------------------

    async def sync_mode(self) -> dict[str, Any]:
        n, warmup, size = self.sizes.sync_writes, 20, 16 * MiB
        rng = random.Random(SEED + 4)
        offsets = [rng.randrange(size // 4096) * 4096 for _ in range(n + warmup)]
        payloads = [os.urandom(4096) for _ in range(n + warmup)]

        def timed_writes(path: Path) -> list[float]:
            out = []
            fd = os.open(path, os.O_WRONLY)
            try:
                for i, (offset, data) in enumerate(zip(offsets, payloads, strict=True)):
                    t0 = time.perf_counter()
                    os.pwrite(fd, data, offset)
                    os.fsync(fd)
                    if i >= warmup:
                        out.append(time.perf_counter() - t0)
            finally:
                os.close(fd)
            return out

        results: dict[str, list[float]] = {}
        for mode in ("async", "sync"):
            name = f"sync-{mode}"
            src, dst = self.sides(name)
            for side in (src, dst):
                await asyncio.to_thread(write_zeros, side / "sync.bin", size)
            extra = {"mode": "sync", "sync_policy": "block"} if mode == "sync" else {}
            async with self.pair(name, src, dst, "intercept", **extra):
                results[mode] = await asyncio.to_thread(timed_writes, src / "sync.bin")

                def same(src: Path = src, dst: Path = dst) -> bool:
                    return file_digest(src / "sync.bin") == file_digest(dst / "sync.bin")

                await until(same, 60, f"{name}: the replica to match", every=0.2)
        plain, sync = results["async"], results["sync"]
        return {
            "metrics": {
                "sync_write_ms_p99": ms(percentile(sync, 99)),
                "plain_write_ms_p99": ms(percentile(plain, 99)),
                "sync_write_ms_p50": ms(percentile(sync, 50)),
                "plain_write_ms_p50": ms(percentile(plain, 50)),
            },
            "ratios": {
                "sync_added_ms_p99": ms(percentile(sync, 99) - percentile(plain, 99)),
            },
            "details": {
                "writes": n,
                "warmup_writes": warmup,
                "write": "os.pwrite 4 KiB at a random 4 KiB offset of a 16 MiB file + os.fsync",
                "sync_settings": "mode=sync, sync_policy=block",
                "plain_settings": "mode=async (a target running)",
            },
        }


# -- report -----------------------------------------------------------------------------------


def judge(metrics: dict[str, Any], ratios: dict[str, Any]) -> dict[str, Any]:
    found = {"metrics": metrics, "ratios": ratios}
    out: dict[str, Any] = {}
    for name, (where, kind, bound) in TARGETS.items():
        section, key = where.split(".")
        value = found[section].get(key)
        if value is None:
            met = False  # not measured (error, not run) or never seen: a miss, never a pass
        else:
            met = value >= bound if kind == "min" else value <= bound
        out[name] = {"value": value, kind: bound, "met": met, "measured": value is not None}
    return out


SCENARIOS = ("seq", "incremental", "lag", "sync")


async def run_all(
    root: Path, sizes: Sizes, only: list[str], profile: Path | None, lag_rate: float
) -> dict[str, Any]:
    bench = Bench(root, sizes, profile, lag_rate)
    methods = {
        "seq": bench.sequential,
        "incremental": bench.incremental,
        "lag": bench.lag,
        "sync": bench.sync_mode,
    }
    metrics: dict[str, Any] = {}
    ratios: dict[str, Any] = {}
    details: dict[str, Any] = {}
    errors: dict[str, str] = {}
    durations: dict[str, float] = {}
    for name in only:
        t0 = time.monotonic()
        try:
            part = await methods[name]()
        except Exception as exc:
            traceback.print_exc()
            errors[name] = f"{type(exc).__name__}: {exc}"
        else:
            metrics.update(part["metrics"])
            ratios.update(part["ratios"])
            details[name] = part["details"]
        durations[name] = round(time.monotonic() - t0, 1)
    return {
        "metrics": metrics,
        "ratios": ratios,
        "details": details,
        "errors": errors,
        "scenario_seconds": durations,
        "observations": bench.observations,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small run (under a minute)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/replication.json"))
    parser.add_argument(
        "--only", default=",".join(SCENARIOS), help=f"comma-separated, of {','.join(SCENARIOS)}"
    )
    parser.add_argument("--tmp", type=Path, default=None, help="where to put the folders")
    parser.add_argument(
        "--lag-mb-s", type=float, default=20.0, help="lag scenario write rate (diagnosis)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the folders and node logs")
    parser.add_argument(
        "--profile", type=Path, default=None, help="py-spy each node into DIR (needs py-spy)"
    )
    args = parser.parse_args()
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    if unknown := [s for s in only if s not in SCENARIOS]:
        parser.error(f"unknown scenarios: {unknown}")
    logging.basicConfig(level=LOG_LEVEL, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    sizes = Sizes.of(args.quick)
    started = time.monotonic()
    load_at_start = [round(x, 2) for x in os.getloadavg()]  # other work on this machine
    root = Path(tempfile.mkdtemp(prefix="tandem-bench-repl-", dir=args.tmp)).resolve()
    try:
        found = asyncio.run(run_all(root, sizes, only, args.profile, args.lag_mb_s * MB))
    finally:
        unmount_leftovers(root)
        if args.keep:
            sys.stderr.write(f"kept {root}\n")
        else:
            shutil.rmtree(root, ignore_errors=True)
    targets = judge(found["metrics"], found["ratios"])
    result = {
        "benchmark": "replication",
        "quick": args.quick,
        "scenarios": only,
        "metrics": found["metrics"],
        "ratios": found["ratios"],
        "targets": targets,
        "errors": found["errors"],
        "details": found["details"],
        "observations": found["observations"],
        "scenario_seconds": found["scenario_seconds"],
        "runtime_s": round(time.monotonic() - started, 1),
        "setup": (
            "one host, loopback; per pair a fresh embedded nats-server (file storage, "
            "sync_interval: always); each node in its own process; MB = 10^6 bytes; "
            "measured after the source's verify & synchronize at start"
        ),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "rsync": shutil.which("rsync") is not None,
            "loadavg_at_start": load_at_start,
        },
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    summary = {k: result[k] for k in ("metrics", "ratios", "targets", "errors", "runtime_s")}
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    return 1 if found["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
