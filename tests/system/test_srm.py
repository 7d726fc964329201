"""``tandem srm failover`` / ``failback`` as an SRM Command Step runs them (a real subprocess)
against a real orchestrator and real agents: a group of two clusters (a database and the
application depending on it), each with a primary node ``a`` and a secondary node ``b``.

One set-up per module: the tests leave the group on a known side and start from wherever the
previous one left it (the commands are idempotent)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent_rig import node_toml, write_agent
from conftest import reset_bus
from helpers import eventually
from orchestrator_rig import OPERATOR, Pair, leader_ready
from tandem.events.bus import Bus
from tandem.events.embedded import NatsServer, free_port
from tandem.events.settings import load_bus_settings, load_stream_settings

pytestmark = pytest.mark.system

MEMBERS = ("erp-db", "erp-app")
NODES = {"a": "primary", "b": "secondary"}
GROUP = """
[[groups]]
name = "erp"
on_failure = "compensate"

[[groups.members]]
cluster = "erp-db"
priority = 0

[[groups.members]]
cluster = "erp-app"
priority = 1
depends_on = ["erp-db"]
"""
SRM_CLI = (
    "import typer\n"
    "from tandem.cli.srm import srm_app\n"
    "app = typer.Typer()\n"
    "app.add_typer(srm_app, name='srm')\n"
    "app()\n"
)


@pytest.fixture(scope="module")
def rig(nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    tmp = tmp_path_factory.mktemp("srm")
    pair = Pair(cluster="erp-db", tmp=tmp, bus_url=nats_server.url, public_port=None)
    try:
        asyncio.run(_fresh_bus(nats_server.url))
        for cluster in MEMBERS:
            for node, identity in NODES.items():
                toml = node_toml(
                    cluster,
                    node,
                    tmp / cluster / node / "state",
                    pair.bus_url,
                    identity=identity,
                    peers=[n for n in NODES if n != node],
                    initial_role="active" if identity == "primary" else "passive",
                )
                pair.agents[f"{cluster}/{node}"] = write_agent(tmp / cluster, node, toml).start()
        config = tmp / "orchestrator.toml"
        config.write_text(GROUP)
        pair.add_orchestrator(extra_env={"TANDEM_ORCHESTRATOR_CONFIG": str(config)}).start()
        asyncio.run(_ready(pair))
        yield pair
    finally:
        pair.stop_all()


async def _fresh_bus(url: str) -> None:
    async with await Bus.connect(load_bus_settings(servers=[url]), name="tandem-test") as bus:
        await reset_bus(bus)
        await bus.provision(load_stream_settings())


async def _ready(pair: Pair) -> None:
    await leader_ready(pair)

    async def members_on_a() -> bool:
        async with pair.api() as api:
            groups = (await api.get("/api/v1/groups")).json()
        return bool(groups) and all(m["active"] == "a" for m in groups[0]["members"])

    await eventually(members_on_a, 60, "every member Active on its primary node a")


@pytest.fixture(scope="module")
def token_file(rig: Pair) -> Path:
    path = rig.tmp / "api.token"
    path.write_text(OPERATOR + "\n")
    return path


def api_url(rig: Pair) -> str:
    return f"http://127.0.0.1:{rig.api_ports[0]}"


def srm(*args: str, timeout: float = 100) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SRM_CLI, "srm", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def move(rig: Pair, token_file: Path, action: str, *extra: str) -> subprocess.CompletedProcess[str]:
    api = ("--api", api_url(rig), "--token-file", str(token_file))
    return srm(action, "--group", "erp", *api, "--timeout", "80", *extra)


def view(rig: Pair, cluster: str) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {OPERATOR}"}
    with httpx.Client(base_url=api_url(rig), headers=headers, timeout=10) as client:
        answer = client.get(f"/api/v1/clusters/{cluster}")
        answer.raise_for_status()
        data: dict[str, Any] = answer.json()
        return data


def active_identity(rig: Pair, cluster: str) -> str | None:
    data = view(rig, cluster)
    nodes = {n["name"]: n for n in data["nodes"]}
    active = nodes.get(data["active"] or "")
    return active["identity"] if active else None


def test_failover_moves_every_member_to_its_secondary_and_a_rerun_moves_nothing(
    rig: Pair, token_file: Path
) -> None:
    home = move(rig, token_file, "failback")  # from wherever another test left it
    assert home.returncode == 0, home.stdout + home.stderr
    first = move(rig, token_file, "failover")
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stderr == ""
    for cluster in MEMBERS:
        assert view(rig, cluster)["active"] == "b"
        assert active_identity(rig, cluster) == "secondary"
    assert "2 member(s) moved, 0 already there" in first.stdout
    epochs = {c: view(rig, c)["epoch"] for c in MEMBERS}

    again = move(rig, token_file, "failover")  # SRM re-runs a plan
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stderr == ""
    assert "already there: erp-db, erp-app" in again.stdout
    for cluster in MEMBERS:
        assert f"{cluster}: skipped: already Active on b (secondary)" in again.stdout
    assert "0 member(s) moved, 2 already there" in again.stdout
    assert {c: view(rig, c)["epoch"] for c in MEMBERS} == epochs  # nothing moved
    assert all(view(rig, c)["active"] == "b" for c in MEMBERS)


def test_failback_returns_every_member_to_its_primary(rig: Pair, token_file: Path) -> None:
    there = move(rig, token_file, "failover")  # from wherever the previous test left it
    assert there.returncode == 0, there.stdout + there.stderr
    back = move(rig, token_file, "failback")
    assert back.returncode == 0, back.stdout + back.stderr
    assert back.stderr == ""
    for cluster in MEMBERS:
        assert view(rig, cluster)["active"] == "a"
        assert active_identity(rig, cluster) == "primary"
    assert "group erp is on its primary nodes: 2 member(s) moved" in back.stdout


def test_refusals_and_an_unreachable_api_fail_with_one_line(rig: Pair, token_file: Path) -> None:
    before = {c: view(rig, c)["epoch"] for c in MEMBERS}

    unknown = srm(
        "failover", "--group", "nope", "--api", api_url(rig), "--token-file", str(token_file)
    )
    assert unknown.returncode == 2
    (line,) = unknown.stderr.splitlines()
    assert "nope" in line and "no group" in line, line

    no_tertiary = move(rig, token_file, "failover", "--to", "tertiary")
    assert no_tertiary.returncode == 2
    (line,) = no_tertiary.stderr.splitlines()
    assert "no tertiary node" in line and "erp-db" in line and "erp-app" in line, line

    closed = f"http://127.0.0.1:{free_port()}"
    unreachable = srm("failover", "--group", "erp", "--api", closed, "--token", OPERATOR)
    assert unreachable.returncode == 3
    (line,) = unreachable.stderr.splitlines()
    assert f"cannot reach the Tandem API at {closed}" in line, line

    assert {c: view(rig, c)["epoch"] for c in MEMBERS} == before  # nothing started


def test_a_member_that_cannot_move_fails_the_step_and_a_skipped_member_stays_put(
    rig: Pair, token_file: Path
) -> None:
    home = move(rig, token_file, "failback")
    assert home.returncode == 0, home.stdout + home.stderr
    headers = {"Authorization": f"Bearer {OPERATOR}"}
    with httpx.Client(base_url=api_url(rig), headers=headers, timeout=10) as client:
        answer = client.post("/api/v1/clusters/erp-db/switchover", json={"to": "b"})
        assert answer.status_code == 202, answer.text
    asyncio.run(_until(lambda: view(rig, "erp-db")["active"] == "b", "erp-db on b"))
    standby = rig.agents["erp-app/b"]
    standby.stop()  # the application's DR node is gone
    try:
        asyncio.run(_until(lambda: not _alive(rig, "erp-app", "b"), "erp-app's b seen gone"))
        failed = move(rig, token_file, "failover")
        assert failed.returncode == 1, failed.stdout + failed.stderr
        (line,) = failed.stderr.splitlines()
        assert line.startswith("tandem srm failover: group erp failed: "), line
        assert "erp-app" in line and "not alive" in line, line
        # erp-db was skipped (already on b): the compensation leaves it there.
        assert "erp-db: nothing to undo (it was not moved)" in failed.stdout
        assert view(rig, "erp-db")["active"] == "b"
        assert view(rig, "erp-app")["active"] == "a"
    finally:
        standby.start()
    asyncio.run(_until(lambda: _alive(rig, "erp-app", "b"), "erp-app's b back"))
    back = move(rig, token_file, "failback")
    assert back.returncode == 0, back.stdout + back.stderr


def _alive(rig: Pair, cluster: str, node: str) -> bool:
    return bool(next(n for n in view(rig, cluster)["nodes"] if n["name"] == node)["alive"])


async def _until(check: Callable[[], bool], what: str) -> None:
    await eventually(check, 30, what)
