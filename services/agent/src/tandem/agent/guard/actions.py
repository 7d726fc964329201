"""What the node guard does when the deadline passes: hide the public identity (the same
filter and address removal as the agent's ``Hide``), then kill the applications. Blocking
code only: the guard has no event loop that could be stuck."""

from __future__ import annotations

import logging
import signal
import subprocess
from pathlib import Path

from tandem.agent.control import procfiles
from tandem.agent.guard.plan import FencePlan, GuardedApp, GuardedIdentity

log = logging.getLogger(__name__)

_COMMAND_TIMEOUT_S = 10.0


class Hider:
    """Built once at the guard's start, so fencing imports and resolves nothing."""

    def __init__(self, identity: GuardedIdentity) -> None:
        self.identity = identity
        self._lan = None
        if identity.kind == "lan":
            from tandem.agent.identity.linux import LinuxLanIdentity

            assert identity.address and identity.interface and identity.table
            self._lan = LinuxLanIdentity(
                identity.address,
                identity.prefix_len,
                identity.interface,
                identity.table,
                channel_interface=identity.channel_interface,
                timeout_s=_COMMAND_TIMEOUT_S,
            )

    def hide(self) -> str:
        kind = self.identity.kind
        if self._lan is not None:
            return f"hid {self.identity.address}: {self._lan.hide_blocking()}"
        if kind == "loopback":
            assert self.identity.state_file
            Path(self.identity.state_file).unlink(missing_ok=True)
            # The public port forwarder lives in the agent process: it goes with it.
            return "marked the loopback identity hidden"
        if kind == "dns":
            return "dns identity: nothing to hide on this node (the dns_updater moves the name)"
        return "windows lan identity: not hidden by the guard (no Windows guard yet)"


def kill_app(app: GuardedApp) -> str:
    if app.control == "process":
        assert app.pid_file
        record = procfiles.read_record(Path(app.pid_file))
        if record is None:
            return f"{app.name}: not running"
        verdict = procfiles.check(record)
        if not verdict.alive:
            return f"{app.name}: {verdict.why}"
        # The application runs in its own session: its pid is its process group.
        procfiles.signal_group(record.pid, signal.SIGKILL)
        return f"{app.name}: killed process group {record.pid}"
    if app.control == "systemd":
        argv = ["systemctl", "kill", "--signal=SIGKILL", "--", f"{app.unit}"]
        try:
            done = subprocess.run(
                argv, capture_output=True, timeout=_COMMAND_TIMEOUT_S, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{app.name}: {' '.join(argv)} failed: {exc}"
        if done.returncode != 0:
            err = " ".join(done.stderr.decode(errors="replace").split())
            return f"{app.name}: {' '.join(argv)} exited {done.returncode}: {err}"
        return f"{app.name}: killed unit {app.unit}"
    return f"{app.name}: not stopped by the guard (Windows service control)"


def fence(plan: FencePlan, hider: Hider) -> tuple[list[str], bool]:
    """Hide, then kill every application. Returns what was done and whether hiding worked."""
    actions: list[str] = []
    hidden = True
    try:
        actions.append(hider.hide())
    except Exception as exc:  # say it and go on: the applications still go
        hidden = False
        actions.append(f"could not hide the public identity: {exc}")
    for app in plan.apps:
        try:
            actions.append(kill_app(app))
        except Exception as exc:
            actions.append(f"{app.name}: could not kill: {exc}")
    return actions, hidden
