"""Node control (issue 18 items 4 and 5a) against real agents, the demo app, a real
orchestrator and nats-server: ``tandem app stop|start|restart`` seen on the demo app's
public port (an operator's stop is not repaired by the health rule, nor undone by a restart
of the agent), ``tandem reinstate``
of the old Active of an automatic switchover (it ends Passive, in sync, with the data
written meanwhile), ``tandem cleanup``, and their refusals (unknown cluster, node or
application: 404; reinstate the Active: 409 with the reason; a viewer mutating: 403; a
bad action: 422).

One pair per module (the real CLI as a subprocess): the first test leaves primary Active
and serving; the second moves the cluster to secondary."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from agent_rig import read_pid
from helpers import eventually
from orchestrator_rig import (
    OPERATOR,
    VIEWER,
    Pair,
    both_nodes_ready,
    cluster_view,
    leader_ready,
    public_get,
    public_put,
    running_pair,
    start_pair,
)
from tandem.events.bus import Bus
from tandem.events.catalog import SwitchoverRequested
from tandem.events.catalog.operations import SwitchoverRequestedPayload
from tandem.events.embedded import NatsServer
from tandem.events.settings import load_bus_settings

pytestmark = pytest.mark.system

CLUSTER = "control"
#: A health rule that would restart the demo app (an operator's stop must not trigger it).
RULE = """
[[rules]]
name = "web-down"
check = "web-http"
metric = "up"
comparator = "=="
threshold = 0
consecutive = 2
actions = [{ do = "restart", tries = 3, delay_s = 0.2 }]
"""


@pytest.fixture(scope="module")
def pair(nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    tmp = tmp_path_factory.mktemp("control")
    yield from running_pair(nats_server.url, tmp, CLUSTER, lambda p: start_pair(p, RULE))


async def tandem(pair: Pair, *args: str) -> subprocess.CompletedProcess[str]:
    """The real ``tandem`` command against this pair's API, with the operator token."""
    api = ("--api", f"http://127.0.0.1:{pair.api_ports[0]}", "--token", OPERATOR)
    command = [sys.executable, "-m", "tandem.cli", *args, *api]
    env = {**os.environ, "COLUMNS": "250"}
    return await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=120, env=env
    )


async def post(pair: Pair, path: str, body: Any = None, token: str = OPERATOR) -> Any:
    async with pair.api(token=token) as api:
        return await api.post(f"/api/v1/clusters/{path}", json=body, timeout=60)


async def stored(pair: Pair, type_: str) -> list[dict[str, Any]]:
    """The cluster's events of ``type_`` in the stream, through the API."""
    found, after = [], 0
    async with pair.api(token=VIEWER) as api:
        while True:
            page = (
                await api.get("/api/v1/events", params={"cluster": CLUSTER, "after": after})
            ).json()
            found += [e for e in page if e["type"] == type_]
            if len(page) < 100:
                return found
            after = page[-1]["seq"]


async def _public_ok(pair: Pair) -> bool:
    assert pair.public_port is not None
    got = await public_get(pair.public_port, "/health")
    return got is not None and got.is_success


def _app_pid(pair: Pair, node: str) -> int | None:
    return read_pid(pair.tmp / node / "state" / "apps" / "web.pid")


def _running(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_app_stop_start_restart_on_the_active_and_the_refusals(pair: Pair) -> None:
    await leader_ready(pair)
    await both_nodes_ready(pair)
    await eventually(lambda: _public_ok(pair), 30, "the demo app served")

    answer = await post(pair, "nope/apps/restart", {"reason": "r"})
    assert answer.status_code == 404 and "no cluster 'nope'" in answer.text
    answer = await post(pair, f"{CLUSTER}/apps/restart", {"app": "db"})
    assert answer.status_code == 404, answer.text
    assert "no application db on primary (there: web)" in answer.text
    answer = await post(pair, f"{CLUSTER}/apps/pause")
    assert answer.status_code == 422, answer.text
    for path in ("apps/stop", "nodes/secondary/reinstate", "cleanup"):
        answer = await post(pair, f"{CLUSTER}/{path}", token=VIEWER)
        assert answer.status_code == 403, (path, answer.text)
    answer = await post(pair, f"{CLUSTER}/nodes/nope/reinstate")
    assert answer.status_code == 404 and "has no node 'nope'" in answer.text
    answer = await post(pair, f"{CLUSTER}/cleanup", {"node": "nope", "reason": "r"})
    assert answer.status_code == 404 and "has no node 'nope'" in answer.text
    done = await tandem(pair, "reinstate", CLUSTER, "primary")
    assert done.returncode == 2, done.stdout
    assert f"primary is the Active of {CLUSTER}: nothing to reinstate" in done.stderr
    done = await tandem(pair, "cleanup", CLUSTER)
    assert done.returncode == 2 and "give --reason" in done.stderr, done.stderr

    # Stop: the app is down on the public port, and the health rule leaves it stopped.
    done = await tandem(pair, "app", "stop", CLUSTER, "web", "--reason", "config change")
    assert done.returncode == 0, done.stderr
    assert "web stopped on primary" in done.stdout and "held" in done.stdout
    assert not await _public_ok(pair)
    await asyncio.sleep(3)  # many check intervals (0.2 s): the rule would have acted by now
    assert not _running(_app_pid(pair, "primary")) and not await _public_ok(pair)
    assert not await stored(pair, "RuleBreached")

    # The hold outlives the agent: restarted Active at the same epoch, it leaves web stopped
    # (paused meanwhile, as for any maintenance: no failover while the agent is away).
    done = await tandem(pair, "pause", CLUSTER, "--reason", "agent upgrade")
    assert done.returncode == 0, done.stderr
    pair.agents["primary"].stop()
    pair.agents["primary"].start()

    async def resumed_holding() -> bool:
        return "web: held stopped by an operator" in pair.agents["primary"].tail(400)

    await eventually(resumed_holding, 60, "primary Active again after its agent's restart")
    await asyncio.sleep(3)  # the rule's checks and a restart's start have had their chance
    assert not _running(_app_pid(pair, "primary")) and not await _public_ok(pair)
    done = await tandem(pair, "resume", CLUSTER)
    assert done.returncode == 0, done.stderr

    done = await tandem(pair, "app", "start", CLUSTER)
    assert done.returncode == 0, done.stderr
    assert "web started on primary" in done.stdout
    await eventually(lambda: _public_ok(pair), 30, "the demo app served again")

    before = _app_pid(pair, "primary")
    done = await tandem(pair, "app", "restart", CLUSTER, "web")
    assert done.returncode == 0, done.stderr
    assert "web restarted on primary" in done.stdout
    after = _app_pid(pair, "primary")
    assert after is not None and after != before and _running(after)
    await eventually(lambda: _public_ok(pair), 30, "the demo app served after its restart")

    async def recorded() -> bool:
        actions = [e["payload"]["action"] for e in await stored(pair, "OperatorActionRecorded")]
        return {"apps", "reinstate", "cleanup"} <= set(actions)

    await eventually(recorded, 30, "the operator actions recorded")
    executed = [e["payload"] for e in await stored(pair, "CommandExecuted")]
    assert [p["ok"] for p in executed if p["command_type"] == "ControlApplications"] == [
        False,  # db: no such application
        True,
        True,
        True,
    ], executed


@pytest.mark.timeout(240)
async def test_reinstate_after_an_automatic_switchover_and_cleanup(pair: Pair) -> None:
    await leader_ready(pair)
    await both_nodes_ready(pair)
    assert pair.public_port is not None
    # A health rule of primary asks for a switchover (as the monitor's switchover rung does).
    request = SwitchoverRequestedPayload(
        to=None, requested_by="rule web-down", reason="test: web keeps failing", automatic=True,
        rule="web-down",
    )  # fmt: skip
    async with await Bus.connect(load_bus_settings(servers=[pair.bus_url]), name="test") as bus:
        await bus.publish(SwitchoverRequested(cluster=CLUSTER, node="primary", payload=request))

    async def moved() -> bool:
        view = await cluster_view(pair)
        nodes = {n["name"]: n for n in view["nodes"]}
        return view["active"] == "secondary" and nodes["primary"]["awaiting_operator"]

    await eventually(moved, 90, "the automatic switchover, primary left for an operator")
    await eventually(lambda: _public_ok(pair), 30, "secondary serving")
    answer = await public_put(pair.public_port, "/items/after-switchover", b"written on secondary")
    assert answer.is_success, answer.text

    done = await tandem(pair, "reinstate", CLUSTER, "secondary")
    assert done.returncode == 2, done.stdout
    assert f"secondary is the Active of {CLUSTER}: nothing to reinstate" in done.stderr
    done = await tandem(pair, "reinstate", CLUSTER, "primary", "--reason", "disk checked")
    assert done.returncode == 0, done.stderr
    assert "primary is a Passive of secondary again, verified and synchronized" in done.stdout

    async def reinstated() -> bool:
        view = await cluster_view(pair)
        primary = next(n for n in view["nodes"] if n["name"] == "primary")
        copy = pair.data("primary") / "after-switchover"
        return (
            not primary["awaiting_operator"]
            and primary["role"] == "passive"
            and primary["replication"] == "in_sync"
            and copy.exists()
            and copy.read_bytes() == b"written on secondary"
        )

    await eventually(reinstated, 60, "primary Passive, in sync, with the data written meanwhile")
    # Replication runs again: what is written now reaches primary too.
    await public_put(pair.public_port, "/items/after-reinstate", b"replicated again")
    later = pair.data("primary") / "after-reinstate"
    await eventually(later.exists, 30, "a new write replicated to primary")
    events = await stored(pair, "NodeReinstated")
    assert [(e["payload"]["target"], e["payload"]["source"]) for e in events] == [
        ("primary", "secondary")
    ]

    done = await tandem(pair, "cleanup", CLUSTER, "--reason", "end of the test")
    assert done.returncode == 0, done.stderr
    assert "restart ladders reset: primary, secondary" in done.stdout, done.stdout
    cleaned = await stored(pair, "NodeCleanedUp")
    assert cleaned[-1]["payload"]["ladders_reset"] == ["primary", "secondary"]
