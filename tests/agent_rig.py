"""Node agents as real processes (``python -m tandem.agent --config``) for system tests, and
a recorder of the events they publish."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from tandem.events.bus import Bus
from tandem.events.envelope import Event
from tandem.events.registry import decode_event
from tandem.events.subjects import events_filter


def _q(value: object) -> str:
    return json.dumps(str(value) if isinstance(value, Path) else value)


def node_toml(
    cluster: str,
    node: str,
    state_dir: Path,
    bus_url: str,
    *,
    identity: str = "primary",
    peers: list[str] | None = None,
    extra: str = "",
    initial_role: str = "active",
    protected_root: Path | None = None,
    bus_extra: str = "",
) -> str:
    """``bus_extra``: more lines of the ``[bus]`` table (a login, TLS files)."""
    text = f"""
cluster = {_q(cluster)}
node = {_q(node)}
identity = {_q(identity)}
peers = {_q(peers or [])}
state_dir = {_q(state_dir)}

[bus]
servers = {_q([bus_url])}
{bus_extra}
[heartbeat]
interval_s = 0.1

[lease]
ttl_s = 3
renew_every_s = 0.3
fence_margin_s = 1.5
"""
    text += f"""
[replication]
capture = "watch"
initial_role = {_q(initial_role)}
"""
    if protected_root is not None:
        text += f"protected_root = {_q(protected_root)}\n"
    return text + extra


@dataclass
class AgentProcess:
    config: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProcess:
        env = {**os.environ, "TANDEM_LOG_LEVEL": "INFO"}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tandem.agent", "--config", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = 20) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        try:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def write_agent(tmp: Path, name: str, toml: str) -> AgentProcess:
    folder = tmp / name
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "node.toml"
    config.write_text(toml)
    return AgentProcess(config, folder / "agent.log")


@dataclass
class EventRecorder:
    """Every event of one cluster, decoded, in arrival order (core subscription: live only)."""

    events: list[Event] = field(default_factory=list)
    sub: Subscription | None = None

    async def start(self, bus: Bus, cluster: str) -> EventRecorder:
        async def on(msg: Msg) -> None:
            self.events.append(decode_event(msg.data))

        self.sub = await bus.nc.subscribe(events_filter(cluster), cb=on)
        return self

    async def stop(self) -> None:
        if self.sub is not None:
            await self.sub.unsubscribe()

    def of(self, type_: str, **payload: Any) -> list[Event]:
        found = []
        for e in self.events:
            if e.type != type_:
                continue
            if all(getattr(e.payload, k) == v for k, v in payload.items()):
                found.append(e)
        return found


def read_pid(pid_file: Path) -> int | None:
    try:
        return int(pid_file.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class ServiceProcess:
    """A central service (``python -m tandem.<module>``) as a real process."""

    module: str
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> ServiceProcess:
        env = {**os.environ, "TANDEM_LOG_LEVEL": "INFO", **self.env}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module], stdout=out, stderr=subprocess.STDOUT, env=env
            )
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self, timeout: float = 20) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def process_alive(pid: int | None) -> bool:
    """The process runs (a zombie, dead but not yet reaped, does not count)."""
    if pid is None:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def http_status(url: str) -> int:
    """The status of a GET of ``url`` (HTTP errors raise, as urllib does)."""
    with urllib.request.urlopen(url, timeout=5) as resp:
        status: int = resp.status
        return status


def demo_app_toml(
    data: Path, app_port: int, public_port: int | None = None, *, host: str | None = None
) -> str:
    """The demo application on a node (listening on ``host``, default 127.0.0.1), its http
    check, and (optionally) the loopback public port."""
    argv = [sys.executable, "-m", "tandem.agent.demoapp", "--data", str(data)]
    argv += ["--port", str(app_port)]
    if host is not None:
        argv += ["--host", host]
    text = f"""
[[applications]]
name = "web"
start = {_q(argv)}
stop_grace_s = 5

[[checks]]
name = "web-http"
plugin = "http"
url = "http://127.0.0.1:{app_port}/health"
application = "web"
interval_s = 0.2
timeout_s = 1
"""
    if public_port is not None:
        text += f"""
[public]
kind = "loopback"
port = {public_port}
forward_to = {app_port}
"""
    return text
