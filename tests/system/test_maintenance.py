"""Maintenance (issue 18 item 3) against real agents, a real orchestrator and nats-server:
``tandem pause`` / ``resume`` and ``tandem node standby`` / ``unstandby`` (the real CLI, a
subprocess) and their endpoints with their bad input; then a paused cluster whose Active is
SIGKILLed is only recommended for failover, and fails over automatically once resumed.

One pair per module: the first test leaves it as it found it (primary Active, not paused,
no node in standby); the second ends it (primary lost)."""

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
    running_pair,
    wait_saga,
)
from tandem.events.embedded import NatsServer

pytestmark = pytest.mark.system

CLUSTER = "maint"


@pytest.fixture(scope="module")
def pair(nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    yield from running_pair(nats_server.url, tmp_path_factory.mktemp("maintenance"), CLUSTER)


async def tandem(pair: Pair, *args: str) -> subprocess.CompletedProcess[str]:
    """The real ``tandem`` command against this pair's API, with the operator token."""
    api = ("--api", f"http://127.0.0.1:{pair.api_ports[0]}", "--token", OPERATOR)
    where = ("--cluster",) if args[0] == "status" else ()
    command = [sys.executable, "-m", "tandem.cli", *args, *where, *api]
    if where:
        command.insert(command.index("--cluster") + 1, CLUSTER)
    env = {**os.environ, "COLUMNS": "250"}
    return await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=60, env=env
    )


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


async def post(pair: Pair, path: str, body: Any = None, token: str = OPERATOR) -> Any:
    async with pair.api(token=token) as api:
        return await api.post(f"/api/v1/clusters/{path}", json=body)


async def test_pause_resume_standby_and_their_refusals(pair: Pair) -> None:
    await leader_ready(pair)
    await both_nodes_ready(pair)

    # Unknown cluster or node: 404; a viewer mutating: 403; bad input: 422.
    answer = await post(pair, "nope/pause", {"reason": "r"})
    assert answer.status_code == 404 and "no cluster 'nope'" in answer.text
    answer = await post(pair, f"{CLUSTER}/nodes/nope/standby")
    assert answer.status_code == 404 and "has no node 'nope'" in answer.text
    answer = await post(pair, f"{CLUSTER}/pause", token=VIEWER)
    assert answer.status_code == 403, answer.text
    answer = await post(pair, f"{CLUSTER}/pause", {"for_s": -1})
    assert answer.status_code == 422 and "for_s" in answer.text
    answer = await post(pair, f"{CLUSTER}/pause", {"for_s": 60, "until": "2099-01-01T00:00Z"})
    assert answer.status_code == 422 and "not both" in answer.text
    answer = await post(pair, f"{CLUSTER}/resume")
    assert answer.status_code == 409 and f"{CLUSTER} is not paused" in answer.text

    # Pause (the CLI), shown in the view and in tandem status; twice: refused with who.
    done = await tandem(pair, "pause", CLUSTER, "--for", "2h", "--reason", "kernel update")
    assert done.returncode == 0, done.stderr
    assert f"{CLUSTER}: paused by operator" in done.stdout and "kernel update" in done.stdout
    view = await cluster_view(pair)
    assert view["maintenance"]["reason"] == "kernel update"
    assert view["maintenance"]["by"].startswith("operator") and view["maintenance"]["until"]
    again = await tandem(pair, "pause", CLUSTER)
    assert again.returncode == 2, again.stdout
    assert "already paused by operator" in again.stderr, again.stderr
    shown = await tandem(pair, "status")
    assert shown.returncode == 0, shown.stderr
    assert "paused by operator" in shown.stdout and "kernel update" in shown.stdout

    # An operator's switchover stays allowed while paused: only the decisions are off.
    # (Standby of the only other node is allowed, and the answer says what it means.)
    done = await tandem(pair, "node", "standby", CLUSTER, "secondary", "--reason", "disk swap")
    assert done.returncode == 0, done.stderr
    assert "secondary is in standby" in done.stdout
    assert f"note: no node of {CLUSTER} can now take over from primary" in done.stdout
    view = await cluster_view(pair)
    secondary = next(n for n in view["nodes"] if n["name"] == "secondary")
    assert secondary["standby"] and secondary["standby_reason"] == "disk swap"
    answer = await post(pair, f"{CLUSTER}/switchover", {"to": "secondary"})
    assert answer.status_code == 409 and "secondary is in standby: disk swap" in answer.text
    answer = await post(pair, f"{CLUSTER}/switchover")
    assert answer.status_code == 409 and "secondary is in standby: disk swap" in answer.text
    answer = await post(pair, f"{CLUSTER}/nodes/secondary/standby")
    assert answer.status_code == 409 and "already in standby: disk swap" in answer.text
    done = await tandem(pair, "node", "unstandby", CLUSTER, "secondary")
    assert done.returncode == 0, done.stderr
    answer = await post(pair, f"{CLUSTER}/nodes/secondary/unstandby")
    assert answer.status_code == 409 and "secondary is not in standby" in answer.text

    done = await tandem(pair, "resume", CLUSTER, "--reason", "kernel updated")
    assert done.returncode == 0, done.stderr
    assert f"{CLUSTER} resumed" in done.stdout
    assert (await cluster_view(pair))["maintenance"] is None

    # Every mutation, accepted or refused, is in the audit trail; the facts in the stream.
    async def recorded() -> bool:
        actions = [e["payload"]["action"] for e in await stored(pair, "OperatorActionRecorded")]
        return {"pause", "resume", "standby", "unstandby"} <= set(actions)

    await eventually(recorded, 30, "the operator actions recorded")
    assert len(await stored(pair, "ClusterPaused")) == 1
    assert len(await stored(pair, "NodeStandbyChanged")) == 2


def _lose_node(pair: Pair, node: str) -> None:
    """The node is gone: its agent and its application are killed without a word."""
    agent = pair.agents[node].proc
    assert agent is not None
    agent.kill()
    agent.wait(10)
    pid = read_pid(pair.tmp / node / "state" / "apps" / "web.pid")
    if pid is not None:
        os.kill(pid, 9)


@pytest.mark.timeout(240)
async def test_a_paused_cluster_is_recommended_for_failover_and_fails_over_once_resumed(
    pair: Pair,
) -> None:
    await leader_ready(pair)
    await both_nodes_ready(pair)
    answer = await post(pair, f"{CLUSTER}/pause", {"reason": "network work"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["maintenance"]["until"] is None

    _lose_node(pair, "primary")

    async def recommended() -> bool:
        return bool(await stored(pair, "FailoverRecommended"))

    await eventually(recommended, 60, "a failover recommended for the paused cluster")
    # (A cycle may say it again before the first is folded: each says the same.)
    for event in await stored(pair, "FailoverRecommended"):
        assert event["payload"]["failed_node"] == "primary"
        assert f"{CLUSTER} is paused by operator" in event["payload"]["reason"]
    started = await stored(pair, "SagaStarted")
    assert not [s for s in started if s["payload"]["kind"] == "failover"], started
    view = await cluster_view(pair)
    assert view["active"] == "primary" and view["pending_failover"]["to"] == "secondary"

    answer = await post(pair, f"{CLUSTER}/resume", {"reason": "network work done"})
    assert answer.status_code == 200, answer.text

    async def failover_started() -> bool:
        return any(s["payload"]["kind"] == "failover" for s in await stored(pair, "SagaStarted"))

    await eventually(failover_started, 60, "an automatic failover once resumed")
    [saga] = [s for s in await stored(pair, "SagaStarted") if s["payload"]["kind"] == "failover"]
    ended = await wait_saga(pair, saga["payload"]["saga_id"])
    assert ended["state"] == "completed", ended
    view = await cluster_view(pair)
    assert view["active"] == "secondary" and view["maintenance"] is None
