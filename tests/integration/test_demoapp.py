"""The demo application as a real process: items stored and read over HTTP, a clean exit on
SIGTERM, and the same app run through ProcessControl as the agent does."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from conftest import require
from helpers import eventually
from tandem.agent.control import ApplicationConfig, AppState, ProcessControl

HTTP_TIMEOUT_S = 10.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def demo_argv(data: Path, port: int) -> list[str]:
    return [sys.executable, "-m", "tandem.agent.demoapp", "--data", str(data), "--port", str(port)]


def _request(method: str, url: str, body: bytes | None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


async def request(method: str, url: str, body: bytes | None = None) -> tuple[int, bytes]:
    return await asyncio.to_thread(_request, method, url, body)


async def healthy(base: str) -> bool:
    try:
        status, _ = await request("GET", f"{base}/health")
    except OSError:
        return False
    return status == 200


class Demo:
    def __init__(self, proc: asyncio.subprocess.Process, base: str, data: Path) -> None:
        self.proc, self.base, self.data = proc, base, data


@pytest.fixture
async def demo(tmp_path: Path) -> AsyncIterator[Demo]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *demo_argv(tmp_path / "data", port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await eventually(lambda: healthy(base), timeout=30, what="the demo app to serve")
        yield Demo(proc, base, tmp_path / "data")
    finally:
        if proc.returncode is None:
            proc.kill()
            await asyncio.wait_for(proc.wait(), 10)


async def test_put_get_list_and_health(demo: Demo) -> None:
    assert await request("GET", f"{demo.base}/items") == (200, b"[]")
    status, body = await request("PUT", f"{demo.base}/items/report-1.txt", b"hello")
    assert status == 200 and json.loads(body) == {"stored": "report-1.txt", "bytes": 5}
    assert (demo.data / "report-1.txt").read_bytes() == b"hello"
    await request("PUT", f"{demo.base}/items/a_2", b"")
    await request("PUT", f"{demo.base}/items/report-1.txt", b"replaced")

    assert await request("GET", f"{demo.base}/items/report-1.txt") == (200, b"replaced")
    assert await request("GET", f"{demo.base}/items/a_2") == (200, b"")
    status, body = await request("GET", f"{demo.base}/items")
    assert (status, json.loads(body)) == (200, ["a_2", "report-1.txt"])
    status, body = await request("GET", f"{demo.base}/health")
    assert (status, json.loads(body)) == (200, {"ok": True})
    # Nothing but the items themselves in the data directory (no temporary files left).
    assert sorted(p.name for p in demo.data.iterdir()) == ["a_2", "report-1.txt"]


async def test_missing_item_is_404(demo: Demo) -> None:
    status, body = await request("GET", f"{demo.base}/items/absent")
    assert status == 404 and "absent" in json.loads(body)["error"]


@pytest.mark.parametrize("name", [".hidden", "..", "a%2Fb", "sp%20ace", "x" * 101])
async def test_bad_names_are_400(demo: Demo, name: str) -> None:
    status, body = await request("PUT", f"{demo.base}/items/{name}", b"x")
    assert status == 400 and "bad item name" in json.loads(body)["error"]
    status, _ = await request("GET", f"{demo.base}/items/{name}")
    assert status == 400
    assert list(demo.data.iterdir()) == []


async def test_sigterm_exits_cleanly_and_prints_nothing(demo: Demo) -> None:
    await request("PUT", f"{demo.base}/items/kept", b"data")
    demo.proc.send_signal(signal.SIGTERM)
    assert demo.proc.stdout is not None
    out = await asyncio.wait_for(demo.proc.stdout.read(), 30)
    assert await asyncio.wait_for(demo.proc.wait(), 30) == 0
    assert out == b""
    assert (demo.data / "kept").read_bytes() == b"data"


async def test_runs_under_process_control(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    app = ApplicationConfig(
        name="demo",
        start=demo_argv(tmp_path / "data", port),
        log_file=tmp_path / "demo.log",
    )
    control = ProcessControl(app, tmp_path / "state", settle_s=0.2)
    started = await control.start()
    try:
        assert started.state is AppState.RUNNING
        await eventually(lambda: healthy(base), timeout=30, what="the demo app to serve")
        assert (await request("PUT", f"{base}/items/one", b"1"))[0] == 200
    finally:
        stopped = await control.stop()
    assert stopped.state is AppState.STOPPED
    # It ended on the SIGTERM itself, cleanly, rather than being killed after the grace.
    assert "SIGTERM" in stopped.message and "exit code 0" in stopped.message
    assert "demo app serving" in (tmp_path / "demo.log").read_text()


async def test_a_full_disk_answers_507_and_stores_nothing(tmp_path: Path) -> None:
    """On a real 256 KiB tmpfs: a PUT that does not fit is answered 507 with the reason (not
    a dropped connection), nothing partial is left, and the app serves on."""
    require(
        "tmpfs mounts (root)",
        os.geteuid() == 0 and shutil.which("mount") is not None,
        "run as root",
    )
    disk = tmp_path / "disk"
    disk.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)]
    await asyncio.to_thread(subprocess.run, mount, check=True)
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *demo_argv(disk / "data", port), stderr=asyncio.subprocess.PIPE
    )
    base = f"http://127.0.0.1:{port}"
    try:
        await eventually(lambda: healthy(base), timeout=30, what="the demo app to serve")
        assert (await request("PUT", f"{base}/items/small", b"fits"))[0] == 200
        status, body = await request("PUT", f"{base}/items/big", os.urandom(1024 * 1024))
        assert status == 507 and "No space left" in json.loads(body)["error"]
        assert sorted(p.name for p in (disk / "data").iterdir()) == ["small"]
        assert (await request("GET", f"{base}/items/small")) == (200, b"fits")
    finally:
        proc.terminate()
        _, err = await asyncio.wait_for(proc.communicate(), 10)
        await asyncio.to_thread(subprocess.run, ["umount", "-l", str(disk)], check=False)
    assert b"Traceback" not in err, err.decode(errors="replace")
