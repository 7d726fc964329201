"""A real PostgreSQL (Debian's postgresql-15) protected by a pair of node agents: the
database's folder under the ``intercept`` capture, postgres running as the ``postgres`` user
under root agents (``[[applications]] user``, ``[replication] allow_other``), its stale
``postmaster.pid`` removed before a start on the node that takes over, an orchestrator
moving it. A client writes numbered rows through the public port and records which commits
were acknowledged (``Writer``); the checker reads the database the new Active serves.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from agent_rig import node_toml, write_agent
from conftest import require
from orchestrator_rig import Pair

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PG_USER = "postgres"


def pg_ready() -> pwd.struct_passwd:
    require("root", os.geteuid() == 0, "the agents run as root and postgres as its own user")
    require(
        "PostgreSQL 15",
        (PG_BIN / "postgres").exists() and (PG_BIN / "initdb").exists(),
        "apt-get install postgresql-15",
    )
    require("FUSE", Path("/dev/fuse").exists() and shutil.which("fusermount3") is not None,
            "apt-get install fuse3")  # fmt: skip
    try:
        return pwd.getpwnam(PG_USER)
    except KeyError:
        require("postgres user", False, "apt-get install postgresql-15 (creates the user)")
        raise


def as_postgres(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, user=PG_USER, group=PG_USER, capture_output=True, text=True, check=True, **kw
    )  # type: ignore[call-overload, no-any-return]


def init_database(data: Path) -> Path:
    """initdb a cluster at ``data``/pgdata (trust auth on loopback: a test database)."""
    pgdata = data / "pgdata"
    as_postgres([str(PG_BIN / "initdb"), "-D", str(pgdata), "-A", "trust", "-U", PG_USER,
                 "--no-instructions"], timeout=120)  # fmt: skip
    return pgdata


def prepare_node_folder(folder: Path) -> None:
    """The protected folder (the replica's too) belongs to postgres, 0700 as it wants."""
    folder.mkdir(parents=True, exist_ok=True)
    user = pwd.getpwnam(PG_USER)
    os.chown(folder, user.pw_uid, user.pw_gid)
    folder.chmod(0o700)


def pg_node_toml(pair: Pair, node: str, *, initial_role: str, mode: str, pg_port: int) -> str:
    data = pair.data(node)
    peers = [n for n in ("primary", "secondary") if n != node]
    toml = node_toml(
        pair.cluster, node, pair.tmp / node / "state", pair.bus_url,
        identity=node, peers=peers, initial_role=initial_role, protected_root=data,
    )  # fmt: skip
    toml = toml.replace(
        'capture = "watch"\n', f'capture = "intercept"\nmode = "{mode}"\nallow_other = true\n'
    )
    sock = pair.tmp / node / "sock"
    sock.mkdir(parents=True, exist_ok=True)
    user = pwd.getpwnam(PG_USER)
    os.chown(sock, user.pw_uid, user.pw_gid)
    argv = [str(PG_BIN / "postgres"), "-D", str(data / "pgdata"), "-p", str(pg_port),
            "-k", str(sock), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=on"]  # fmt: skip
    return (
        toml
        + f"""
[[applications]]
name = "db"
start = {_toml_list(argv)}
user = "{PG_USER}"
cwd = "{data}"
log_file = "{pair.tmp / node / "postgres.log"}"
stale_files = ["pgdata/postmaster.pid"]
# SIGINT: PostgreSQL's fast shutdown.
stop_signal = "INT"
stop_grace_s = 30
start_timeout_s = 60
settle_s = 1.0
restart = {{ tries = 3, delay_s = 1.0 }}

[[checks]]
name = "db-port"
plugin = "tcp"
application = "db"
host = "127.0.0.1"
port = {pg_port}
interval_s = 0.5
timeout_s = 2

[public]
kind = "loopback"
port = {pair.public_port}
forward_to = {pg_port}

[shutdown]
deadline_s = 60
"""
    )


def _toml_list(items: list[str]) -> str:
    return "[" + ", ".join(f'"{i}"' for i in items) + "]"


def add_pg_node(pair: Pair, node: str, *, initial_role: str, mode: str, pg_port: int) -> None:
    toml = pg_node_toml(pair, node, initial_role=initial_role, mode=mode, pg_port=pg_port)
    pair.agents[node] = write_agent(pair.tmp, node, toml)


def connect(port: int, timeout_s: float = 3.0) -> psycopg.Connection:  # type: ignore[type-arg]
    return psycopg.connect(
        host="127.0.0.1", port=port, user=PG_USER, dbname="postgres",
        connect_timeout=max(1, int(timeout_s)), autocommit=True,
    )  # fmt: skip


@dataclass
class Writer:
    """Inserts 1, 2, 3, ... one transaction each through ``port``; ``acked`` holds every
    number whose COMMIT returned. Reconnects after an error (the Active going away)."""

    port: int
    acked: list[int] = field(default_factory=list)
    #: time.time() at each COMMIT's return, beside ``acked``.
    acked_at: list[float] = field(default_factory=list)
    errors: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Writer:
        with connect_retrying(self.port) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS acked (n bigint PRIMARY KEY, at timestamptz)")
        self._thread = threading.Thread(target=self._run, name="pg-writer", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        n = 0
        conn = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = connect(self.port)
                n += 1
                conn.execute("INSERT INTO acked VALUES (%s, now())", (n,))
                self.acked_at.append(time.time())
                self.acked.append(n)
            except psycopg.Error:
                self.errors += 1
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                conn = None
                time.sleep(0.2)
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)


def connect_retrying(port: int, for_s: float = 60.0) -> psycopg.Connection:  # type: ignore[type-arg]
    """A connection through the public port, tried again while the server is (re)starting
    behind it (a proxy that accepted, a server still in recovery)."""
    give_up = time.monotonic() + for_s
    while True:
        try:
            conn = connect(port, timeout_s=5)
            conn.execute("SELECT 1")
            return conn
        except psycopg.OperationalError:
            if time.monotonic() > give_up:
                raise
            time.sleep(0.5)


def answers(port: int) -> bool:
    """Whether a client gets an answer to a query through ``port`` now."""
    try:
        with connect(port, timeout_s=1) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def rows_present(port: int) -> set[int]:
    with connect_retrying(port) as conn:
        return {r[0] for r in conn.execute("SELECT n FROM acked").fetchall()}
