"""The protected applications of a node, started and stopped in dependency order.

On a node that replicates a folder, nothing starts an application while the folder's capture
is not live (``gate``): every path (a saga's StartApplications, the agent resuming as Active
at start, unfencing, a health rule's restart, an operator's restart request) goes through
``start`` or ``restart`` here, and an application writing to a folder nobody captures loses
every write at the next failover without a single error."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from tandem.agent.control.base import AppState, AppStatus, ControlError, ServiceControl
from tandem.agent.control.config import ApplicationConfig, dependency_order, make_control
from tandem.events.nodeboard import NodeBoard

log = logging.getLogger(__name__)


class ApplicationSet:
    def __init__(
        self,
        apps: list[ApplicationConfig],
        state_dir: Path,
        controls: dict[str, ServiceControl] | None = None,
        gate: Callable[[], str] | None = None,
    ) -> None:
        #: Why no application may start now ('' when they may): the capture is not live.
        self.gate = gate or (lambda: "")
        self.ordered = dependency_order(apps)
        self.controls = controls or {a.name: make_control(a, state_dir) for a in self.ordered}
        self._lock = asyncio.Lock()  # one start/stop/restart at a time: they must not interleave

    def names(self) -> list[str]:
        return [a.name for a in self.ordered]

    def _select(self, wanted: list[str]) -> list[ApplicationConfig]:
        unknown = sorted(set(wanted) - set(self.names()))
        if unknown:
            raise ControlError(f"no such application: {', '.join(unknown)}")
        return [a for a in self.ordered if not wanted or a.name in wanted]

    async def start(self, wanted: list[str] | None = None, *, retry: bool = False) -> list[str]:
        """Start in dependency order; an application starts only once what it depends on
        runs. Returns what was done, one line per application; raises on the first failure.

        ``retry``: a failed start is tried again by the application's restart policy
        (``restart.tries`` more times, ``restart.delay_s`` apart, doubling), as a saga's
        StartApplications does after the role changed (the step's timeout bounds it all);
        what it tried is in the answer."""
        done: list[str] = []
        async with self._lock:
            selected = self._select(wanted or [])
            refusal = self.gate() if selected else ""
            if refusal:
                raise ControlError(f"not started: {refusal}")
            for app in selected:
                for dep in app.depends_on:
                    status = await self.controls[dep].status()
                    if status.state is not AppState.RUNNING:
                        raise ControlError(
                            f"{app.name} not started: it depends on {dep}, which is "
                            f"{status.state} ({status.message})"
                        )
                status, tried = await self._start_one(app, retry)
                done.append(f"{app.name}: {status.message or status.state}{tried}")
        return done

    async def _start_one(self, app: ApplicationConfig, retry: bool) -> tuple[AppStatus, str]:
        policy = app.restart
        tries = policy.tries if retry else 0
        delay = min(policy.delay_s, policy.max_delay_s)
        loop = asyncio.get_running_loop()
        give_up = None if policy.deadline_s is None else loop.time() + policy.deadline_s
        failures: list[str] = []
        while True:
            try:
                status = await self.controls[app.name].start()
            except ControlError as exc:
                failures.append(exc.message)
                late = give_up is not None and loop.time() + delay > give_up
                if len(failures) > tries or late:
                    said = f" (after {len(failures)} tries)" if len(failures) > 1 else ""
                    if late and len(failures) <= tries:
                        said += f" (restart deadline {policy.deadline_s:g}s reached)"
                    raise ControlError(f"{exc.message}{said}") from None
                log.warning(
                    "%s did not start (try %d of %d): %s; again in %gs",
                    app.name, len(failures), tries + 1, exc.message, delay,
                )  # fmt: skip
                await asyncio.sleep(delay)
                delay = min(delay * policy.backoff, policy.max_delay_s)
                continue
            tried = f" (on try {len(failures) + 1})" if failures else ""
            return status, tried

    async def stop(self, wanted: list[str] | None = None) -> list[str]:
        """Stop in reverse dependency order (dependents first). Tries every application and
        raises after, naming the ones that would not stop."""
        done: list[str] = []
        failed: list[str] = []
        async with self._lock:
            for app in reversed(self._select(wanted or [])):
                try:
                    status = await self.controls[app.name].stop()
                    done.append(f"{app.name}: {status.message or status.state}")
                except ControlError as exc:
                    failed.append(f"{app.name}: {exc.message}")
        if failed:
            raise ControlError("; ".join(failed))
        return done

    async def restart(self, name: str) -> tuple[bool, str]:
        """Stop and start one application (a rule's ``restart`` action)."""
        try:
            async with self._lock:
                control = self.controls[name] if name in self.controls else None
                if control is None:
                    return False, f"no such application: {name}"
                refusal = self.gate()
                if refusal:
                    return False, f"{name} not restarted: {refusal}"
                await control.stop()
                status = await control.start()
            return True, f"{name} restarted: {status.message or status.state}"
        except ControlError as exc:
            return False, f"{name} could not be restarted: {exc.message}"

    async def any_running(self) -> bool:
        for control in self.controls.values():
            if (await control.status()).state is AppState.RUNNING:
                return True
        return False


def capture_gate(root: Path | None, board: NodeBoard) -> Callable[[], str]:
    """Why the applications may not start now: ``root``'s capture is not live at the
    node's epoch (the replicator sets ``board.source_ready_epoch`` once it is). No root: the
    node replicates nothing, nothing to wait for."""

    def refusal() -> str:
        if root is None:
            return ""
        ready = board.source_ready_epoch
        if ready > 0 and ready >= board.epoch:
            return ""
        return (
            f"the capture of {root} is not live at epoch {board.epoch}: what the applications "
            "write would not be replicated"
        )

    return refusal
