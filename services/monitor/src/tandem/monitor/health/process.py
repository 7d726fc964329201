"""Process check: is a process running, found by name or through its pid file (psutil)."""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import psutil
from pydantic import model_validator

from tandem.events.catalog.vocabulary import HealthStatus
from tandem.monitor.health.base import Sample
from tandem.monitor.health.checkbase import CheckBase

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Found:
    """The processes a selector found; ``problem`` says why none was found when it matters."""

    pids: tuple[int, ...]
    rss_bytes: int
    problem: str | None = None


def matches_name(name: str | None, cmdline: list[str] | None, wanted: str) -> bool:
    """True when ``wanted`` is the process name or the basename of its ``cmdline[0]``."""
    if name == wanted:
        return True
    if not cmdline:
        return False
    return os.path.basename(cmdline[0]) == wanted


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return True  # it exists, we just may not look at it


def _rss(proc: psutil.Process) -> int:
    try:
        return int(proc.memory_info().rss)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0


def find_by_name(wanted: str) -> Found:
    """Every live process called ``wanted`` (blocking: call it in a thread)."""
    pids: list[int] = []
    rss = 0
    for proc in psutil.process_iter(["name", "cmdline"], ad_value=None):
        if not matches_name(proc.info["name"], proc.info["cmdline"], wanted):
            continue
        if _alive(proc):
            pids.append(proc.pid)
            rss += _rss(proc)
    problem = None if pids else f"no process named {wanted} is running"
    return Found(tuple(pids), rss, problem)


def read_pid_file(path: Path) -> int:
    """The pid in ``path``; ValueError with a sentence when the file is missing or holds garbage."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip()
    except FileNotFoundError:
        raise ValueError(f"pid file {path} does not exist") from None
    except OSError as exc:
        raise ValueError(f"pid file {path} cannot be read: {exc.strerror or exc}") from None
    first = text.split(maxsplit=1)[0] if text else ""
    if not first.isdigit() or int(first) <= 0:
        shown = (text[:20] + "...") if len(text) > 20 else text
        raise ValueError(f"pid file {path} does not hold a pid (found {shown!r})")
    return int(first)


def find_by_pid_file(path: Path) -> Found:
    """The process whose pid is in ``path`` (blocking: call it in a thread)."""
    try:
        pid = read_pid_file(path)
    except ValueError as exc:
        return Found((), 0, str(exc))
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return Found((), 0, f"pid {pid} from {path} is not running")
    if not _alive(proc):
        return Found((), 0, f"pid {pid} from {path} is not running")
    return Found((pid,), _rss(proc))


def find(process_name: str | None, pid_file: Path | None) -> Found:
    if process_name is not None:
        return find_by_name(process_name)
    assert pid_file is not None
    return find_by_pid_file(pid_file)


class ProcessCheckConfig(CheckBase):
    """Exactly one of ``process_name`` or ``pid_file``."""

    plugin: Literal["process"] = "process"
    process_name: str | None = None
    pid_file: Path | None = None

    @model_validator(mode="after")
    def _one_selector(self) -> ProcessCheckConfig:
        if (self.process_name is None) == (self.pid_file is None):
            raise ValueError("set exactly one of process_name or pid_file")
        if self.process_name is not None and not self.process_name.strip():
            raise ValueError("process_name must not be empty")
        return self

    def describe(self) -> str:
        return f"process {self.process_name}" if self.process_name else f"pid file {self.pid_file}"


class ProcessCheck:
    """Metrics: ``running`` (1/0), ``count``, ``rss_bytes`` (sum over the matched processes)."""

    kind = "process"

    def __init__(self, config: ProcessCheckConfig) -> None:
        self.config = config

    async def check(self) -> Sample:
        found = await asyncio.to_thread(find, self.config.process_name, self.config.pid_file)
        metrics = {
            "running": 1.0 if found.pids else 0.0,
            "count": float(len(found.pids)),
            "rss_bytes": float(found.rss_bytes),
        }
        if not found.pids:
            return Sample(
                status=HealthStatus.CRITICAL,
                metrics=metrics,
                message=found.problem or f"{self.config.describe()} is not running",
            )
        pids = ", ".join(str(p) for p in found.pids[:5]) + (", ..." if len(found.pids) > 5 else "")
        return Sample(
            status=HealthStatus.OK,
            metrics=metrics,
            message=f"{self.config.describe()} is running (pid {pids})",
        )
