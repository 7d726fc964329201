"""A real BIND9 ``named`` for tests: one dynamic zone that takes TSIG-signed updates.

``bind_server(tmp_path)`` (a generator for a fixture) generates a key with ``tsig-keygen``,
writes ``named.conf`` and the zone into a temp dir, starts ``named -g`` on 127.0.0.1 at a
free port (UDP and TCP), waits for "running" in its log and stops it afterwards. A test can
``stop()`` and ``start()`` it again: same port, and the zone keeps its updates (journal).
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.asyncquery
import dns.flags
import dns.message
import dns.rdatatype

from conftest import require
from process_rig import LoggedProcess, tail

ZONE = "dr.tandem.test"
KEY_NAME = "tandem-test"
#: The line named -g logs once it serves.
RUNNING = re.compile(r" running$")


class NamedError(RuntimeError):
    """named did not start; the message has the end of its log."""


def free_dns_port(host: str = "127.0.0.1") -> int:
    """A port free for both TCP and UDP right now."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
                return port
    raise NamedError("no port free for both TCP and UDP")


def write_key(path: Path, name: str = KEY_NAME, secret: str | None = None) -> Path:
    """A key file in BIND's format; a random secret unless given (a wrong key for tests)."""
    secret = secret or base64.b64encode(os.urandom(32)).decode()
    path.write_text(f'key "{name}" {{\n\talgorithm hmac-sha256;\n\tsecret "{secret}";\n}};\n')
    return path


@dataclass
class BindServer:
    workdir: Path
    zone: str = ZONE
    key_name: str = KEY_NAME
    host: str = "127.0.0.1"
    #: Records put in the zone at creation, as zone-file lines (relative names).
    records: list[str] = field(default_factory=list)
    port: int | None = None
    process: LoggedProcess | None = field(default=None, init=False)

    @property
    def key_file(self) -> Path:
        return self.workdir / "tsig.key"

    @property
    def log_path(self) -> Path:
        return self.workdir / "named.log"

    @property
    def config_path(self) -> Path:
        return self.workdir / "named.conf"

    def prepare(self) -> None:
        """Key (``tsig-keygen``), zone file and named.conf; the zone is made only once."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.key_file.exists():
            key = subprocess.run(
                ["tsig-keygen", "-a", "hmac-sha256", self.key_name],
                capture_output=True,
                text=True,
                check=True,
                timeout=30,
            )
            self.key_file.write_text(key.stdout)
        zone_file = self.workdir / f"{self.zone}.zone"
        if not zone_file.exists():
            lines = [
                "$TTL 60",
                f"@ IN SOA ns1.{self.zone}. hostmaster.{self.zone}. ( 1 3600 600 86400 60 )",
                f"@ IN NS ns1.{self.zone}.",
                "ns1 IN A 127.0.0.1",
                *self.records,
            ]
            zone_file.write_text("\n".join(lines) + "\n")
        d = self.workdir
        self.config_path.write_text(
            f"""include "{self.key_file}";
options {{
    directory "{d}";
    pid-file "{d}/named.pid";
    lock-file "{d}/named.lock";
    session-keyfile "{d}/session.key";
    managed-keys-directory "{d}";
    listen-on port {self.port} {{ {self.host}; }};
    listen-on-v6 {{ none; }};
    recursion no;
    dnssec-validation no;
    notify no;
    allow-query {{ any; }};
}};
controls {{ }};
zone "{self.zone}" {{
    type primary;
    file "{zone_file}";
    allow-update {{ key "{self.key_name}"; }};
}};
"""
        )

    def start(self, timeout: float = 30.0) -> BindServer:
        """Start (on the port of the last start, if any) and wait until it serves."""
        if self.is_running():
            raise NamedError("named is already running")
        first = self.port is None
        for _ in range(5 if first else 1):
            if first:
                self.port = free_dns_port(self.host)
            self.prepare()
            process = self.process = LoggedProcess.start(
                "named",
                # -g: foreground, log to stderr; -u root: we are root here, with no bind user.
                ["named", "-g", "-u", "root", "-n", "1", "-c", str(self.config_path)],
                self.log_path,
            )
            try:
                process.wait_for(RUNNING, timeout, NamedError)
                return self
            except NamedError:
                self.stop()
                if not first or "address in use" not in process.new_log():
                    raise
        raise NamedError("named found no free port")

    def stop(self, timeout: float = 10.0) -> None:
        process, self.process = self.process, None
        if process is not None:
            process.stop(timeout)

    def is_running(self) -> bool:
        return self.process is not None and self.process.is_running()

    @property
    def server(self) -> dict[str, object]:
        """As a ``[[update.servers]]`` entry of the dns_updater config."""
        return {"address": self.host, "port": self.port}

    async def addresses(self, name: str, timeout: float = 2.0) -> set[str]:
        """The A and AAAA addresses named answers for ``name`` (relative to the zone)."""
        assert self.port is not None
        found: set[str] = set()
        for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            query = dns.message.make_query(f"{name}.{self.zone}.", rdtype)
            query.flags &= ~dns.flags.RD
            response = await dns.asyncquery.udp(query, self.host, timeout=timeout, port=self.port)
            for rrset in response.answer:
                found.update(rdata.to_text() for rdata in rrset)
        return found

    def log_tail(self, lines: int = 30) -> str:
        try:
            return tail(self.log_path.read_text(errors="replace"), lines)
        except OSError:
            return "(no log)"


def bind_server(workdir: Path, records: list[str] | None = None) -> Iterator[BindServer]:
    """For a fixture: a running named (skipped when BIND is not installed), stopped after."""
    require(
        "named",
        all(shutil.which(b) for b in ("named", "tsig-keygen")),
        "apt-get install bind9 bind9-utils",
    )
    server = BindServer(workdir, records=list(records or []))
    try:
        yield server.start()
    finally:
        server.stop()
