"""Writer and poller of the lag scenario of bench/replication.py, each in a process of its own
(so neither waits for the other's interpreter lock, nor for the replicator's).

    python bench/repl_lag.py write '<json>'   # paced 4 KiB writes at random 4 KiB slots
    python bench/repl_lag.py poll '<json>'    # first-seen time of each write on the replica

Write number ``i`` (from 0) carries the sequence number ``i + 1`` in its first 8 bytes
(little-endian) and goes to slot ``slots(seed, n, nslots)[i]``; the file starts as zeros.
Write ``i`` is on the replica when its slot holds a number >= ``i + 1`` (a later write to the
same slot implies it too: the target applies in journal order). The poller scans forward from
the oldest write not seen yet and stamps every write it finds applied with the time of the
scan; it polls every ``interval_s`` (1 ms). Both record ``time.monotonic()`` (one clock for
the whole machine) in an ``array('d')`` file: written-at per write, seen-at per write (0: not
seen before the poller's deadline).
"""

from __future__ import annotations

import json
import mmap
import os
import random
import resource
import struct
import sys
import time
from array import array
from typing import Any

BLOCK = 4096
_SEQ = struct.Struct("<Q")


def slots(seed: int, n: int, nslots: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(nslots) for _ in range(n)]


def write(spec: dict[str, Any]) -> None:
    path = str(spec["path"])
    n = int(spec["n"])
    interval = BLOCK / float(spec["rate_bytes_s"])
    where = slots(int(spec["seed"]), n, int(spec["nslots"]))
    pool = os.urandom(1 << 20)  # incompressible payload (the codec is zstd)
    tail = BLOCK - _SEQ.size
    times = array("d", bytes(8 * n))
    fd = os.open(path, os.O_WRONLY)
    try:
        t0 = time.monotonic()
        for i in range(n):
            due = t0 + i * interval
            now = time.monotonic()
            if due > now:
                time.sleep(due - now)  # behind schedule: no sleep until caught up
            start = (i * 4099) % (len(pool) - tail)
            os.pwrite(fd, _SEQ.pack(i + 1) + pool[start : start + tail], where[i] * BLOCK)
            times[i] = time.monotonic()
    finally:
        os.close(fd)
    with open(str(spec["out"]), "wb") as f:
        times.tofile(f)


def poll(spec: dict[str, Any]) -> None:
    path = str(spec["path"])
    n = int(spec["n"])
    where = slots(int(spec["seed"]), n, int(spec["nslots"]))
    interval = float(spec.get("interval_s", 0.001))
    deadline = time.monotonic() + float(spec["timeout_s"])
    seen = array("d", bytes(8 * n))
    offsets = [s * BLOCK for s in where]
    unpack = _SEQ.unpack_from
    fd = os.open(path, os.O_RDONLY)
    try:
        mm = mmap.mmap(fd, 0, prot=mmap.PROT_READ)  # the replica's page cache, no syscall
        lo = 0
        sys.stdout.write("READY\n")
        sys.stdout.flush()
        while lo < n:
            j = lo
            while j < n and unpack(mm, offsets[j])[0] > j:
                j += 1
            if j > lo:
                now = time.monotonic()
                for k in range(lo, j):
                    seen[k] = now
                lo = j
            if time.monotonic() > deadline:
                break
            time.sleep(interval)
        mm.close()
    finally:
        os.close(fd)
    with open(str(spec["out"]), "wb") as f:
        seen.tofile(f)


def main() -> int:
    what, spec = sys.argv[1], json.loads(sys.argv[2])
    {"write": write, "poll": poll}[what](spec)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    with open(str(spec["out"]) + ".json", "w") as f:
        json.dump({"cpu_s": round(usage.ru_utime + usage.ru_stime, 2)}, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
