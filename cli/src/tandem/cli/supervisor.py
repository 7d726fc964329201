"""Supervise child processes: start, restart with backoff when one dies, stop all cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tandem.events.parent_death import parent_death

log = logging.getLogger(__name__)

__all__ = ["Child", "Supervisor", "parent_death"]


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    log_path: Path
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    stopping: bool = False
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None


class Supervisor:
    """Keeps children running. ``on_event`` receives one human-readable line per change."""

    def __init__(self, on_event: Callable[[str], None], *, max_backoff_s: float = 30.0) -> None:
        self.children: list[Child] = []
        self.on_event = on_event
        self.max_backoff_s = max_backoff_s

    async def start(self, child: Child) -> None:
        self.children.append(child)
        await self._spawn(child)
        child.watcher = asyncio.create_task(self._watch(child), name=f"watch-{child.name}")

    async def _spawn(self, child: Child) -> None:
        child.log_path.parent.mkdir(parents=True, exist_ok=True)
        with child.log_path.open("ab") as out:
            child.process = await asyncio.create_subprocess_exec(
                *child.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, **child.env},
                # Ctrl-C reaches only the supervisor, which then stops the children in order.
                start_new_session=True,
                preexec_fn=parent_death(),
            )

    async def _watch(self, child: Child) -> None:
        backoff = 1.0
        while True:
            assert child.process is not None
            code = await child.process.wait()
            if child.stopping:
                return
            child.restarts += 1
            self.on_event(
                f"{child.name} exited with {code}; restarting in {backoff:.0f}s "
                f"(restart {child.restarts}, log {child.log_path})"
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.max_backoff_s)
            await self._spawn(child)

    async def stop_all(self, timeout_s: float = 10.0) -> None:
        """SIGTERM every child (last started first), wait, then SIGKILL what is left."""
        for child in reversed(self.children):
            child.stopping = True
            if child.watcher:
                child.watcher.cancel()
            if child.process and child.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.terminate()
        for child in reversed(self.children):
            proc = child.process
            if proc is None or proc.returncode is not None:
                continue
            try:
                await asyncio.wait_for(proc.wait(), timeout=timeout_s)
            except TimeoutError:
                self.on_event(f"{child.name} did not stop within {timeout_s:.0f}s; killing it")
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await asyncio.wait_for(proc.wait(), timeout=5)
