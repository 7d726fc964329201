"""Command check, Nagios-like: run a program, judge its exit code, read a number from stdout.

Also home of ``run_argv``, the subprocess runner the service check uses: the child runs in its
own session (process group) and the whole group is killed when the check is cancelled, e.g. by
``sample_within``'s timeout, so a hanging command leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field

from tandem.events.catalog.vocabulary import HealthStatus
from tandem.monitor.health.base import Sample, failed_sample
from tandem.monitor.health.checkbase import CheckBase

log = logging.getLogger(__name__)

POSIX = os.name == "posix"


@dataclass(frozen=True)
class CommandResult:
    returncode: int
    stdout: str
    stderr: str


def _kill(proc: asyncio.subprocess.Process) -> None:
    """Kill the child and, on POSIX, its whole process group (grandchildren holding our pipes)."""
    try:
        if POSIX:
            os.killpg(proc.pid, signal.SIGKILL)  # the child leads its own process group
        elif proc.returncode is None:
            proc.kill()
    except ProcessLookupError:
        pass


async def run_argv(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> CommandResult:
    """Run ``argv`` to completion; kill its process group if cancelled.

    Raises FileNotFoundError / PermissionError when the program cannot be started.
    """
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        start_new_session=POSIX,
    )
    try:
        out, err = await proc.communicate()
    except BaseException:
        _kill(proc)
        await proc.wait()  # reap it; after SIGKILL this is immediate
        log.debug("killed %s (pid %s) after cancellation", argv[0], proc.pid)
        raise
    return CommandResult(
        returncode=proc.returncode if proc.returncode is not None else -1,
        stdout=out.decode("utf-8", errors="replace"),
        stderr=err.decode("utf-8", errors="replace"),
    )


def first_line(text: str, limit: int = 200) -> str:
    for line in text.splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= limit else line[: limit - 3] + "..."
    return ""


def extract_value(pattern: re.Pattern[str], text: str) -> float | None:
    """The first group (or the whole match) of ``pattern`` in ``text`` as a float, else None."""
    match = pattern.search(text)
    if match is None:
        return None
    raw = match.group(1) if pattern.groups else match.group(0)
    try:
        return float(raw.strip())
    except (TypeError, ValueError):
        return None


def status_for_exit(code: int, ok: Sequence[int], warn: Sequence[int]) -> HealthStatus:
    if code in ok:
        return HealthStatus.OK
    if code in warn:
        return HealthStatus.WARNING
    return HealthStatus.CRITICAL


class CommandCheckConfig(CheckBase):
    """``env`` is added to the monitor's environment; ``cwd`` defaults to the monitor's."""

    plugin: Literal["command"] = "command"
    argv: list[str] = Field(min_length=1)
    cwd: Path | None = None
    env: dict[str, str] = Field(default_factory=dict)
    ok_exit_codes: list[int] = Field(default_factory=lambda: [0], min_length=1)
    warn_exit_codes: list[int] = Field(default_factory=lambda: [1])
    #: Compiled at validation; its first group (or whole match) in stdout is the ``value`` metric.
    value_regex: re.Pattern[str] | None = None


class CommandCheck:
    """Metrics: ``exit_code`` and, when ``value_regex`` finds a number, ``value``."""

    kind = "command"

    def __init__(self, config: CommandCheckConfig) -> None:
        self.config = config

    async def check(self) -> Sample:
        cfg = self.config
        program = os.path.basename(cfg.argv[0]) or cfg.argv[0]
        env = {**os.environ, **cfg.env} if cfg.env else None
        try:
            result = await run_argv(cfg.argv, cwd=cfg.cwd, env=env)
        except FileNotFoundError as exc:
            if cfg.cwd is not None and str(exc.filename) == str(cfg.cwd):
                why = f"directory {cfg.cwd} does not exist"
            else:
                why = "not found"
            return failed_sample(f"command {cfg.argv[0]} cannot be started: {why}")
        except PermissionError:
            return failed_sample(f"command {cfg.argv[0]} cannot be started: permission denied")
        status = status_for_exit(result.returncode, cfg.ok_exit_codes, cfg.warn_exit_codes)
        metrics = {"exit_code": float(result.returncode)}
        output = first_line(result.stdout) or first_line(result.stderr)
        message = f"{program} exited with {result.returncode}" + (f": {output}" if output else "")
        if cfg.value_regex is not None:
            value = extract_value(cfg.value_regex, result.stdout)
            if value is None:
                message += f" (no number matching /{cfg.value_regex.pattern}/ in its output)"
            else:
                metrics["value"] = value
        return Sample(status=status, metrics=metrics, message=message)
