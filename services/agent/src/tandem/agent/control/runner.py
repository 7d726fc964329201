"""Running a short control command (systemctl, sc.exe) with a timeout, injectable for tests."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from tandem.agent.control.base import ControlError

log = logging.getLogger(__name__)

# (argv, timeout in seconds) -> (exit code, stdout, stderr). Raises ControlError when the
# command cannot be run or does not finish in time.
Runner = Callable[[list[str], float], Awaitable[tuple[int, str, str]]]

# How long to wait for a command to go away once killed for its timeout.
_KILL_WAIT_S = 5.0


async def run_command(argv: list[str], timeout: float) -> tuple[int, str, str]:
    """Run ``argv`` (no shell) and return its exit code and decoded output."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
    except OSError as exc:
        raise ControlError(f"cannot run {argv[0]}: {exc.strerror or exc}") from exc
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        try:
            await asyncio.wait_for(proc.wait(), _KILL_WAIT_S)
        except TimeoutError:
            log.warning("%s (pid %s) did not exit after being killed", argv[0], proc.pid)
        raise ControlError(f"{' '.join(argv)} did not finish within {timeout:g}s") from None
    except asyncio.CancelledError:
        # A cancelled caller must not leave the command running on its own.
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        raise
    rc = proc.returncode if proc.returncode is not None else -1
    return rc, out.decode(errors="replace"), err.decode(errors="replace")
