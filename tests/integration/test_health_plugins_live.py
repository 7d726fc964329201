"""Health plugins against real things on this machine: child processes and pid files, a TCP
server, an HTTP server, subprocesses, a sqlite3 file database, psutil.

No assertion on speed (the machine is noisy); small timeouts only make hangs end.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psutil
import pytest

from conftest import has_binary, require
from helpers import eventually
from tandem.events.catalog.vocabulary import HealthStatus
from tandem.monitor.health.base import HealthPlugin, Sample, sample_within
from tandem.monitor.health.config import build_plugin, parse_check_config
from tandem.monitor.health.sql import SqlCheck

PY = sys.executable


def plugin(**data: Any) -> HealthPlugin:
    return build_plugin(parse_check_config({"name": "check", **data}))


async def check(**data: Any) -> Sample:
    return await sample_within(plugin(**data), 30)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gone(pid: int) -> bool:
    """Not running any more (a zombie left for an init that does not reap counts as gone)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


async def sleeper(executable: str | Path = PY) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        str(executable), "-c", "import time; time.sleep(120)"
    )


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
    await proc.wait()


# --- process ----------------------------------------------------------------------------------


async def test_process_by_name_counts_every_instance(tmp_path: Path) -> None:
    name = f"tdm{uuid.uuid4().hex[:8]}"  # short: Linux keeps 15 characters of a process name
    (tmp_path / name).symlink_to(PY)
    children = [await sleeper(tmp_path / name) for _ in range(2)]
    try:
        await eventually(
            lambda: all(psutil.Process(c.pid).name() == name for c in children), what="exec"
        )
        sample = await check(plugin="process", process_name=name)
        assert sample.status == HealthStatus.OK, sample.message
        assert sample.metrics["running"] == 1.0
        assert sample.metrics["count"] == 2.0
        assert sample.metrics["rss_bytes"] > 0
        for child in children:
            await stop(child)
        sample = await check(plugin="process", process_name=name)
        assert sample.status == HealthStatus.CRITICAL
        assert sample.metrics == {"running": 0.0, "count": 0.0, "rss_bytes": 0.0}
        assert sample.message == f"no process named {name} is running"
    finally:
        for child in children:
            await stop(child)


async def test_process_by_pid_file(tmp_path: Path) -> None:
    pid_file = tmp_path / "app.pid"
    child = await sleeper()
    try:
        pid_file.write_text(f"{child.pid}\n")
        sample = await check(plugin="process", pid_file=str(pid_file))
        assert sample.status == HealthStatus.OK, sample.message
        assert (sample.metrics["running"], sample.metrics["count"]) == (1.0, 1.0)
        assert sample.metrics["rss_bytes"] > 0
        assert str(child.pid) in sample.message
    finally:
        await stop(child)
    sample = await check(plugin="process", pid_file=str(pid_file))
    assert sample.status == HealthStatus.CRITICAL
    assert sample.message == f"pid {child.pid} from {pid_file} is not running"
    assert sample.metrics["running"] == 0.0


async def test_process_pid_file_missing_or_garbage(tmp_path: Path) -> None:
    sample = await check(plugin="process", pid_file=str(tmp_path / "none.pid"))
    assert sample.status == HealthStatus.CRITICAL
    assert "does not exist" in sample.message
    (tmp_path / "bad.pid").write_text("hello\n")
    sample = await check(plugin="process", pid_file=str(tmp_path / "bad.pid"))
    assert sample.status == HealthStatus.CRITICAL
    assert "does not hold a pid (found 'hello')" in sample.message


# --- service ----------------------------------------------------------------------------------


async def test_systemd_real_systemctl_on_a_missing_unit() -> None:
    """Real systemctl: without systemd as PID 1 it cannot answer (failed sample with its own
    words); with systemd the unit is not found. Either way: CRITICAL, naming the unit."""
    require("systemctl", has_binary("systemctl"), "install systemd")
    unit = f"tandem-no-such-unit-{uuid.uuid4().hex[:6]}.service"
    sample = await check(plugin="service", unit=unit)
    assert sample.status == HealthStatus.CRITICAL
    assert unit in sample.message
    if sample.completed:
        assert sample.message == f"unit {unit} is not found"
    else:
        assert sample.message.startswith(f"systemctl could not query {unit}: ")


async def test_a_missing_systemctl_gives_a_failed_sample(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no systemctl on the path
    sample = await check(plugin="service", unit="nginx.service")
    assert sample.completed is False
    assert sample.status == HealthStatus.CRITICAL
    assert sample.message == "systemctl is not installed: cannot check service nginx.service"


# --- tcp --------------------------------------------------------------------------------------


@pytest.fixture
async def tcp_port() -> AsyncIterator[int]:
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def test_tcp_up(tcp_port: int) -> None:
    sample = await check(plugin="tcp", host="127.0.0.1", port=tcp_port)
    assert sample.status == HealthStatus.OK, sample.message
    assert sample.metrics["up"] == 1.0
    assert sample.metrics["connect_ms"] >= 0
    assert sample.message.startswith(f"tcp 127.0.0.1:{tcp_port} accepted a connection")


async def test_tcp_refused() -> None:
    port = closed_port()
    sample = await check(plugin="tcp", host="127.0.0.1", port=port)
    assert sample.status == HealthStatus.CRITICAL
    assert sample.metrics == {"up": 0.0}
    assert sample.message == f"tcp 127.0.0.1:{port} refused the connection"


# --- http -------------------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    release: threading.Event

    def do_GET(self) -> None:
        if self.path == "/hang":
            self.release.wait(60)
        status, body = {"/ok": (200, b"status: green"), "/hang": (200, b"late")}.get(
            self.path, (503, b"maintenance")
        )
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def http_base() -> Iterator[str]:
    release = threading.Event()
    handler = type("H", (Handler,), {"release": release})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    release.set()
    server.shutdown()
    server.server_close()
    thread.join()


async def test_http_ok_with_body_match(http_base: str) -> None:
    sample = await check(plugin="http", url=f"{http_base}/ok", body_match=r"status:\s*green")
    assert sample.status == HealthStatus.OK, sample.message
    assert (sample.metrics["up"], sample.metrics["status"]) == (1.0, 200.0)
    assert sample.metrics["latency_ms"] >= 0


async def test_http_unexpected_status(http_base: str) -> None:
    sample = await check(plugin="http", url=f"{http_base}/down")
    assert sample.status == HealthStatus.CRITICAL
    assert (sample.metrics["up"], sample.metrics["status"]) == (0.0, 503.0)
    assert sample.message == f"http GET {http_base}/down answered 503 (expected 200)"
    sample = await check(plugin="http", url=f"{http_base}/down", expect_status=[200, 503])
    assert sample.status == HealthStatus.OK


async def test_http_body_mismatch(http_base: str) -> None:
    sample = await check(plugin="http", url=f"{http_base}/ok", body_match="red")
    assert sample.status == HealthStatus.CRITICAL
    assert sample.message.endswith("answered 200 but the body does not match /red/")


async def test_http_slower_than_the_warning_level(http_base: str) -> None:
    sample = await check(plugin="http", url=f"{http_base}/ok", warn_latency_ms=0)
    assert sample.status == HealthStatus.WARNING
    assert sample.metrics["up"] == 1.0
    assert "(warn above 0 ms)" in sample.message


async def test_http_refused() -> None:
    url = f"http://127.0.0.1:{closed_port()}/health"
    sample = await check(plugin="http", url=url)
    assert sample.status == HealthStatus.CRITICAL
    assert sample.metrics == {"up": 0.0}
    assert sample.message == f"http GET {url} cannot connect: connection refused"


async def test_http_hanging_server(http_base: str) -> None:
    url = f"{http_base}/hang"
    sample = await sample_within(plugin(plugin="http", url=url), 0.5)
    assert (sample.completed, sample.status) == (False, HealthStatus.CRITICAL)
    assert sample.message == "http check timed out after 0.5s"
    sample = await sample_within(plugin(plugin="http", url=url, timeout_s=0.3), 30)
    assert sample.completed is True
    assert sample.message == f"http GET {url} did not answer within 0.3s"


# --- command ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status"),
    [(0, HealthStatus.OK), (1, HealthStatus.WARNING), (2, HealthStatus.CRITICAL)],
)
async def test_command_exit_codes_and_value(code: int, status: HealthStatus) -> None:
    script = f"import sys; print('QUEUE depth=42.5 items'); sys.exit({code})"
    sample = await check(plugin="command", argv=[PY, "-c", script], value_regex=r"depth=(\S+)")
    assert sample.status == status
    assert sample.metrics == {"exit_code": float(code), "value": 42.5}
    assert sample.message.endswith(f"exited with {code}: QUEUE depth=42.5 items")


async def test_command_stderr_env_and_cwd(tmp_path: Path) -> None:
    script = (
        "import os, sys; sys.stderr.write(os.environ['WHO'] + ' in ' + os.getcwd()); sys.exit(3)"
    )
    sample = await check(
        plugin="command", argv=[PY, "-c", script], env={"WHO": "probe"}, cwd=str(tmp_path)
    )
    assert sample.status == HealthStatus.CRITICAL
    assert sample.metrics == {"exit_code": 3.0}
    assert sample.message.endswith(f"exited with 3: probe in {tmp_path}")


async def test_command_without_the_number() -> None:
    sample = await check(
        plugin="command", argv=[PY, "-c", "print('no digits')"], value_regex=r"\d+"
    )
    assert sample.status == HealthStatus.OK
    assert "value" not in sample.metrics
    assert "(no number matching /\\d+/ in its output)" in sample.message


async def test_command_that_does_not_exist() -> None:
    sample = await check(plugin="command", argv=["/nonexistent/tandem-probe"])
    assert (sample.completed, sample.status) == (False, HealthStatus.CRITICAL)
    assert sample.message == "command /nonexistent/tandem-probe cannot be started: not found"
    sample = await check(plugin="command", argv=[PY, "-V"], cwd="/nonexistent/dir")
    assert sample.completed is False
    assert sample.message.endswith("cannot be started: directory /nonexistent/dir does not exist")


async def test_a_hanging_command_is_killed_with_its_children() -> None:
    require("sh", has_binary("sh"), "a POSIX shell")
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    probe = plugin(plugin="command", argv=["sh", "-c", "sleep 120; echo never"])
    task = asyncio.create_task(sample_within(probe, 3))
    spawned: set[int] = set()

    def shell_and_sleep_started() -> bool:
        spawned.update({p.pid for p in me.children(recursive=True)} - before)
        return len(spawned) >= 2  # sh and its sleep

    await eventually(shell_and_sleep_started, what="sh and sleep")
    sample = await task
    assert (sample.completed, sample.message) == (False, "command check timed out after 3s")
    await eventually(lambda: all(gone(pid) for pid in spawned), what="children killed")


# --- sql --------------------------------------------------------------------------------------


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE writes(at REAL)")
    return path


def write_at(db: Path, at: float) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("INSERT INTO writes(at) VALUES (?)", (at,))


def sql(db: Path, **data: Any) -> dict[str, Any]:
    return {"plugin": "sql", "driver": "sqlite3", "connect_args": [str(db)], **data}


FRESHNESS = "SELECT max(at) FROM writes"


async def test_sql_fresh_writes(db: Path) -> None:
    write_at(db, time.time() - 3)
    sample = await check(**sql(db, query="SELECT count(*) FROM writes", freshness_query=FRESHNESS))
    assert sample.status == HealthStatus.OK, sample.message
    assert sample.metrics["up"] == 1.0
    assert sample.metrics["query_ms"] >= 0
    assert 0 <= sample.metrics["age_s"] < 3600
    # sqlite's datetime() gives a naive ISO string, read as UTC
    iso = "SELECT datetime(max(at), 'unixepoch') FROM writes"
    sample = await check(**sql(db, freshness_query=iso, max_age_s=3600))
    assert sample.status == HealthStatus.OK, sample.message


async def test_sql_stale_writes(db: Path) -> None:
    write_at(db, time.time() - 4000)
    sample = await check(**sql(db, freshness_query=FRESHNESS, max_age_s=30))
    assert sample.status == HealthStatus.CRITICAL
    assert sample.metrics["age_s"] >= 4000
    assert f"newest write is {sample.metrics['age_s']:.0f}s old (limit 30s)" in sample.message


async def test_sql_no_write_at_all(db: Path) -> None:
    sample = await check(**sql(db, freshness_query=FRESHNESS, max_age_s=30))
    assert sample.status == HealthStatus.CRITICAL
    assert "the freshness query found no write" in sample.message


async def test_sql_slow_query_warns(db: Path) -> None:
    sample = await check(**sql(db, max_query_ms=0))
    assert sample.status == HealthStatus.WARNING
    assert "(limit 0 ms)" in sample.message


async def test_sql_broken_database_and_query(db: Path, tmp_path: Path) -> None:
    missing = f"file:{tmp_path / 'missing.db'}?mode=ro"
    sample = await check(**sql(db, connect_args=[missing], connect_kwargs={"uri": True}))
    assert sample.status == HealthStatus.CRITICAL
    assert sample.metrics == {"up": 0.0}
    assert sample.message == "sql sqlite3 failed: OperationalError: unable to open database file"
    sample = await check(**sql(db, query="SELECT * FROM nowhere"))
    assert sample.message == "sql sqlite3 failed: OperationalError: no such table: nowhere"


async def test_sql_hanging_query_is_interrupted(db: Path) -> None:
    forever = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT max(x) FROM c"
    probe = plugin(**sql(db, query=forever))
    assert isinstance(probe, SqlCheck)
    task = asyncio.create_task(sample_within(probe, 60))
    await eventually(lambda: probe.busy, what="query running")
    task.cancel()  # what a timeout does; here without waiting for one
    with pytest.raises(asyncio.CancelledError):
        await task
    await eventually(lambda: not probe.busy, what="sqlite interrupted")
    sample = await sample_within(probe, 0.5)
    assert sample.completed is False  # the next check hangs the same way, and ends at the timeout
    await eventually(lambda: not probe.busy, what="sqlite interrupted again")


# --- perf -------------------------------------------------------------------------------------


async def test_perf_on_this_machine(tmp_path: Path) -> None:
    probe = plugin(plugin="perf", disk_path=str(tmp_path))
    for _ in range(2):  # the second check measures cpu since the first
        sample = await sample_within(probe, 30)
        assert sample.status == HealthStatus.OK, sample.message
        assert set(sample.metrics) == {
            "cpu_percent",
            "memory_percent",
            "disk_free_percent",
            "disk_free_bytes",
            "disk_latency_ms",
        }
        assert 0 <= sample.metrics["cpu_percent"] <= 100
        assert 0 < sample.metrics["memory_percent"] <= 100
        assert 0 <= sample.metrics["disk_free_percent"] <= 100
    assert not os.listdir(tmp_path)  # the latency probe cleans up


async def test_perf_thresholds_and_process_memory(tmp_path: Path) -> None:
    pid_file = tmp_path / "me.pid"
    pid_file.write_text(str(os.getpid()))
    sample = await check(
        plugin="perf",
        disk_path=str(tmp_path),
        pid_file=str(pid_file),
        max_memory_percent=0,
        min_disk_free_percent=100,
        max_process_rss_bytes=1,
    )
    assert sample.status == HealthStatus.WARNING
    assert sample.metrics["process_rss_bytes"] > 1
    assert "memory" in sample.message
    assert f"disk {tmp_path}" in sample.message
    assert "process rss" in sample.message


async def test_perf_with_a_missing_disk_and_process(tmp_path: Path) -> None:
    sample = await check(
        plugin="perf", disk_path=str(tmp_path / "gone"), pid_file=str(tmp_path / "x.pid")
    )
    assert sample.status == HealthStatus.WARNING
    assert "disk_free_percent" not in sample.metrics
    assert "process_rss_bytes" not in sample.metrics
    assert f"disk {tmp_path / 'gone'} cannot be read" in sample.message
    assert f"pid file {tmp_path / 'x.pid'} does not exist" in sample.message
