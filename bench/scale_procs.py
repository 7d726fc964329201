"""The generator of the scale benchmark (bench/scale.py) as its two processes: the bulk
(bench/scale_load.py: every node's heartbeats, renewals and role reads) and the sampled
Actives' acknowledged renewals (bench/scale_sampler.py), each told what to do, and asked
what it did, over a pipe of its own. Both are spawned: nothing of this process is shared.
"""

from __future__ import annotations

import multiprocessing
from typing import Any

from scale_load import run_bulk
from scale_rig import cpu_s
from scale_sampler import run_sampler

#: Actives renewing with acknowledged puts (the rest renew without waiting for an answer).
SAMPLED = 20
#: Connections the bulk generator's nodes share (an agent has two of its own).
CONNECTIONS = 8


def cluster(i: int) -> str:
    return f"c{i:04d}"


class Load:
    """The generator's two processes (bulk and sampled renewals) and their control pipes."""

    def __init__(self, bus_url: str, clusters: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        names = [cluster(i) for i in range(clusters)]
        self.sampled = [f"{cluster(i)}.east" for i in range(min(SAMPLED, clusters // 2))]
        self.bulk_pipe, bulk_end = ctx.Pipe()
        self.sample_pipe, sample_end = ctx.Pipe()
        self.bulk = ctx.Process(
            target=run_bulk, args=(bus_url, names, self.sampled, bulk_end, CONNECTIONS)
        )
        self.sampler = ctx.Process(target=run_sampler, args=(bus_url, self.sampled, sample_end))

    def start(self) -> Load:
        self.bulk.start()
        self.sampler.start()
        for pipe in (self.bulk_pipe, self.sample_pipe):
            self._answer(pipe, "ready", 120)
        return self

    def _answer(self, pipe: Any, kind: str, timeout: float = 10) -> Any:
        if not pipe.poll(timeout):
            raise RuntimeError(f"the generator did not answer {kind!r} in {timeout}s")
        got = pipe.recv()
        if got[0] != kind:
            raise RuntimeError(f"the generator answered {got[0]!r}, not {kind!r}")
        return got[1]

    def stop_active(self, name: str) -> float:
        """Wall time at which the generator stopped the Active of ``name``."""
        self.bulk_pipe.send(("stop", name))
        return float(self._answer(self.bulk_pipe, "stopped"))

    def stats(self) -> dict[str, Any]:
        self.bulk_pipe.send(("stats",))
        return dict(self._answer(self.bulk_pipe, "stats"))

    def sampler_stats(self) -> list[dict[str, Any]]:
        self.sample_pipe.send(("stats",))
        return list(self._answer(self.sample_pipe, "stats", 30))

    def cpu_s(self) -> float:
        return sum(cpu_s(p.pid) for p in (self.bulk, self.sampler) if p.pid and p.is_alive())

    def close(self) -> None:
        for proc, pipe in ((self.bulk, self.bulk_pipe), (self.sampler, self.sample_pipe)):
            if proc.is_alive():
                try:
                    pipe.send(("quit",))
                except OSError:
                    pass
                proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join(5)
