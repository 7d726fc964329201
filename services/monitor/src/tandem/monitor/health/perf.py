"""Performance check (psutil): CPU, memory, disk space, disk latency, optionally one process's
memory. Thresholds only set the sample's status (WARNING on a breach); actions are the rules
engine's business.

``cpu_percent`` is the busy share of all CPUs since this plugin's previous check (the first
check samples over 0.1 s). ``disk_latency_ms`` is the time to write 4 KiB to a new temporary
file in ``disk_path``'s directory, fsync it and remove it: what a small synchronous write costs
an application now. When that directory is not writable the metric is left out and the message
says why.
"""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Literal, NamedTuple

import psutil
from pydantic import Field, model_validator

from tandem.events.catalog.vocabulary import HealthStatus
from tandem.monitor.health.base import Sample
from tandem.monitor.health.checkbase import CheckBase, elapsed_ms
from tandem.monitor.health.process import find

log = logging.getLogger(__name__)

FIRST_CPU_INTERVAL_S = 0.1
PROBE_BYTES = b"\0" * 4096


class CpuTimes(NamedTuple):
    total: float
    busy: float


def cpu_times() -> CpuTimes:
    t = psutil.cpu_times()
    # guest time is already counted in user/nice (Linux), iowait is idle time
    total = sum(t) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
    idle = t.idle + getattr(t, "iowait", 0.0)
    return CpuTimes(total, total - idle)


def busy_percent(before: CpuTimes, after: CpuTimes) -> float:
    total = after.total - before.total
    if total <= 0:
        return 0.0
    return min(100.0, max(0.0, (after.busy - before.busy) / total * 100.0))


def probe_dir(disk_path: Path) -> Path:
    return disk_path if disk_path.is_dir() else disk_path.parent


def disk_write_latency_ms(directory: Path) -> float:
    """Write, fsync and remove a small temporary file in ``directory``; milliseconds taken."""
    start = time.perf_counter()
    fd, name = tempfile.mkstemp(prefix=".tandem-perf-", dir=directory)
    try:
        os.write(fd, PROBE_BYTES)
        os.fsync(fd)
    finally:
        os.close(fd)
        os.unlink(name)
    return elapsed_ms(start, time.perf_counter())


class PerfCheckConfig(CheckBase):
    """Thresholds are optional; a breach makes the sample WARNING."""

    plugin: Literal["perf"] = "perf"
    disk_path: Path = Path("/")
    process_name: str | None = Field(default=None, min_length=1)
    pid_file: Path | None = None
    max_cpu_percent: float | None = Field(default=None, ge=0, le=100)
    max_memory_percent: float | None = Field(default=None, ge=0, le=100)
    min_disk_free_percent: float | None = Field(default=None, ge=0, le=100)
    max_disk_latency_ms: float | None = Field(default=None, ge=0)
    max_process_rss_bytes: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _one_process(self) -> PerfCheckConfig:
        if self.process_name is not None and self.pid_file is not None:
            raise ValueError("set at most one of process_name or pid_file")
        if self.max_process_rss_bytes is not None and not self.watches_process:
            raise ValueError("max_process_rss_bytes needs process_name or pid_file")
        return self

    @property
    def watches_process(self) -> bool:
        return self.process_name is not None or self.pid_file is not None


class PerfCheck:
    """Metrics: ``cpu_percent``, ``memory_percent``, ``disk_free_percent``, ``disk_free_bytes``,
    ``disk_latency_ms`` (when measurable), ``process_rss_bytes`` (when a process is configured
    and found). An unreadable ``disk_path`` leaves out the disk metrics and makes it WARNING.
    """

    kind = "perf"

    def __init__(self, config: PerfCheckConfig) -> None:
        self.config = config
        self._cpu: CpuTimes | None = None

    def _measure(self) -> tuple[dict[str, float], list[str]]:
        cfg = self.config
        notes: list[str] = []
        before = self._cpu
        if before is None:
            before = cpu_times()
            time.sleep(FIRST_CPU_INTERVAL_S)
        self._cpu = cpu_times()
        metrics = {
            "cpu_percent": busy_percent(before, self._cpu),
            "memory_percent": float(psutil.virtual_memory().percent),
        }
        self._measure_disk(metrics, notes)
        if cfg.watches_process:
            found = find(cfg.process_name, cfg.pid_file)
            if found.pids:
                metrics["process_rss_bytes"] = float(found.rss_bytes)
            else:
                notes.append(found.problem or "the process is not running")
        return metrics, notes

    def _measure_disk(self, metrics: dict[str, float], notes: list[str]) -> None:
        path = self.config.disk_path
        try:
            usage = psutil.disk_usage(str(path))
        except OSError as exc:
            notes.append(f"disk {path} cannot be read: {exc.strerror or exc}")
            return
        metrics["disk_free_percent"] = 100.0 - float(usage.percent)
        metrics["disk_free_bytes"] = float(usage.free)
        directory = probe_dir(path)
        try:
            metrics["disk_latency_ms"] = disk_write_latency_ms(directory)
        except OSError as exc:
            notes.append(f"disk latency not measured in {directory}: {exc.strerror or exc}")

    def breaches(self, metrics: dict[str, float]) -> list[str]:
        """Sentences for every threshold the metrics cross (pure)."""
        cfg = self.config
        out: list[str] = []

        def above(key: str, limit: float | None, label: str, unit: str) -> None:
            value = metrics.get(key)
            if limit is not None and value is not None and value > limit:
                out.append(f"{label} {value:.0f}{unit} above {limit:g}{unit}")

        above("cpu_percent", cfg.max_cpu_percent, "cpu", "%")
        above("memory_percent", cfg.max_memory_percent, "memory", "%")
        free = metrics.get("disk_free_percent")
        if cfg.min_disk_free_percent is not None and free is not None:
            if free < cfg.min_disk_free_percent:
                out.append(
                    f"disk {cfg.disk_path} {free:.0f}% free below {cfg.min_disk_free_percent:g}%"
                )
        above("disk_latency_ms", cfg.max_disk_latency_ms, "disk latency", " ms")
        above("process_rss_bytes", cfg.max_process_rss_bytes, "process rss", " bytes")
        return out

    async def check(self) -> Sample:
        metrics, notes = await asyncio.to_thread(self._measure)
        breaches = self.breaches(metrics)
        if breaches:
            return Sample(
                status=HealthStatus.WARNING, metrics=metrics, message="; ".join(breaches + notes)
            )
        if "disk_free_percent" not in metrics:  # the disk path cannot be read: worth a look
            return Sample(status=HealthStatus.WARNING, metrics=metrics, message="; ".join(notes))
        summary = (
            f"cpu {metrics['cpu_percent']:.0f}%, memory {metrics['memory_percent']:.0f}%, "
            f"disk {self.config.disk_path} {metrics['disk_free_percent']:.0f}% free"
        )
        if "disk_latency_ms" in metrics:
            summary += f", disk latency {metrics['disk_latency_ms']:.1f} ms"
        return Sample(status=HealthStatus.OK, metrics=metrics, message="; ".join([summary, *notes]))
