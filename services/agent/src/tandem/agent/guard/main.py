"""The node guard process (``python -m tandem.agent.guard PLAN.json``).

It owns the node's "may serve until" deadline, kept on CLOCK_BOOTTIME. The agent is its
parent and writes to its stdin, one JSON object a line:

* ``{"until": T, "epoch": E}``: the node may serve (at epoch ``E``) until ``T`` (set after
  each lease renewal, and just before the node exposes); ``{"until": null}``: the node does
  not serve, nothing to guard;
* ``{"stop": true}``: the agent is stopping cleanly (it hid the node itself): exit.

When ``T`` passes (the agent is frozen, starved or cut off from the bus), when stdin closes
without a stop (the agent was killed) or on SIGTERM while the node serves, the guard hides the
node and kills its applications, writes what it did to a report file the agent turns into an
event, and waits to be armed again. No bus, no asyncio: nothing here can be stuck behind the
agent's work. It runs in a session of its own, so it outlives a SIGKILL of the agent.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import select
import signal
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from tandem.agent.guard.actions import Hider, fence
from tandem.agent.guard.plan import FencePlan, boot_clock
from tandem.agent.guard.watchdog import Watchdog

log = logging.getLogger("tandem.agent.guard")

#: How often the guard wakes at most to look at the clock (and feed the watchdog).
TICK_S = 0.05
LOCK_WAIT_S = 30.0


class Guard:
    def __init__(self, plan: FencePlan, stdin_fd: int) -> None:
        self.plan = plan
        self.fd = stdin_fd
        self.hider = Hider(plan.identity)
        self.watchdog = Watchdog(plan.watchdog, plan.watchdog_timeout_s) if plan.watchdog else None
        self.until: float | None = None
        self.buffer = b""
        self.terminated = False
        self.agent_pid = os.getppid()
        self.epoch = 0  # the epoch the node serves at, for the report

    # --- messages ------------------------------------------------------------------------

    def _read(self) -> bool:
        """Take what the agent wrote; False once stdin is closed."""
        try:
            chunk = os.read(self.fd, 65536)
        except BlockingIOError:
            return True
        if not chunk:
            return False
        self.buffer += chunk
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            if line.strip():
                self._take(line)
        return True

    def _take(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            log.error("guard: ignoring a line that is not JSON: %r", line[:200])
            return
        if message.get("stop"):
            self.until = None
            raise _Stop("the agent stopped cleanly")
        until = message.get("until")
        self.until = float(until) if isinstance(until, int | float) else None
        epoch = message.get("epoch")
        self.epoch = epoch if isinstance(epoch, int) else self.epoch

    # --- the loop -------------------------------------------------------------------------

    def run(self) -> str:
        os.set_blocking(self.fd, False)
        while True:
            now = boot_clock()
            if self.terminated:
                return self._end("SIGTERM while the node may serve")
            if self.until is not None:
                if now >= self.until:
                    late = now - self.until
                    self._fence(f"the agent's deadline passed {late:.2f}s ago", late)
                    self._kill_agent_holding_the_identity()
                else:
                    self._watchdog_serving()
            else:
                self._watchdog_idle()
            wait = TICK_S if self.until is None else min(TICK_S, max(0.0, self.until - now))
            try:
                ready, _, _ = select.select([self.fd], [], [], wait)
                if ready and not self._read():
                    return self._end("the agent exited without stopping cleanly")
            except _Stop as stop:
                self._watchdog_idle()
                return str(stop)
            except InterruptedError:
                continue

    def _end(self, why: str) -> str:
        if self.until is not None:
            self._fence(why, 0.0)
        self._watchdog_idle()
        return why

    def _fence(self, reason: str, late_s: float) -> None:
        started = time.monotonic()
        actions, hidden = fence(self.plan, self.hider)
        took = time.monotonic() - started
        log.error("guard: %s; fenced in %.3fs: %s", reason, took, "; ".join(actions))
        self.until = None  # hidden: nothing to guard until the agent arms it again
        if self.watchdog is not None:
            if hidden:
                self.watchdog.disarm()
            else:
                self.watchdog.abandon()  # could not hide: let the machine reboot
        self._report(reason, actions, late_s, took)

    def _kill_agent_holding_the_identity(self) -> None:
        """The loopback stand-in's public port is a socket of the agent: a frozen agent keeps
        answering on it until it is killed (its supervisor restarts it, hidden)."""
        if not self.plan.identity.held_by_agent:
            return
        agent = self.agent_pid
        if os.getppid() == agent:  # still our parent: not a reused pid, not a subreaper
            log.error("guard: killing the agent (pid %d): it holds the public port", agent)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(agent, signal.SIGKILL)

    def _report(self, reason: str, actions: list[str], late_s: float, took: float) -> None:
        directory = Path(self.plan.report_dir)
        directory.mkdir(parents=True, exist_ok=True)
        report = {
            "reason": reason,
            "actions": actions,
            "fenced_at": datetime.now(UTC).isoformat(),
            "late_s": round(late_s, 3),
            "took_s": round(took, 3),
            "epoch": self.epoch,
        }
        path = directory / f"fenced-{time.time_ns()}.json"
        tmp = path.with_name(f".{path.name}.tmp")
        with tmp.open("w", encoding="utf-8") as f:
            json.dump(report, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def _watchdog_serving(self) -> None:
        if self.watchdog is None:
            return
        try:
            self.watchdog.arm()
            self.watchdog.keepalive()
        except OSError as exc:
            log.error("guard: watchdog %s: %s", self.watchdog.path, exc)

    def _watchdog_idle(self) -> None:
        if self.watchdog is not None and self.watchdog.armed:
            try:
                self.watchdog.disarm()
            except OSError as exc:
                log.error("guard: watchdog %s: %s", self.watchdog.path, exc)


class _Stop(Exception):
    pass


def _raise_priority() -> None:
    """Run ahead of ordinary work: a guard starved of CPU is late to hide."""
    try:
        os.nice(-10)
    except OSError:
        pass  # not root: run at the agent's priority


def _lock(path: str) -> int:
    """One guard per node: wait for a previous guard (still fencing after its agent died)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise SystemExit(f"guard: {path} is still held by another guard") from None
            time.sleep(0.05)


def main(argv: list[str]) -> int:
    logging.basicConfig(
        level=os.environ.get("TANDEM_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if len(argv) != 1:
        sys.stderr.write("usage: python -m tandem.agent.guard PLAN.json\n")
        return 2
    plan = FencePlan.model_validate_json(Path(argv[0]).read_text(encoding="utf-8"))
    guard = Guard(plan, sys.stdin.fileno())

    def on_term(signum: int, frame: object) -> None:
        guard.terminated = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C meant for the agent
    _lock(plan.lock_file)
    _raise_priority()
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    why = guard.run()
    log.info("guard of %s/%s exits: %s", plan.cluster, plan.node, why)
    return 0
