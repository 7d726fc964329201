"""Sagas on an operator's day one (issue 18 items 1, 2, 5b, 9) against real agents, a real
orchestrator and nats-server, through the real CLI (a subprocess) and the API:

- a switchover cancelled before its role change is undone (``tandem saga cancel``); one past
  its role change is refused (409, the reason), stops for an operator, and ``tandem saga
  resume`` carries it on from the step it reached once the cause is fixed;
- ``tandem history`` / ``GET /api/v1/sagas`` list them with who, why, duration and outcome;
  ``tandem status`` (``--json``) and ``tandem list`` show the overview;
- an automatic failover after SIGKILL of the Active is recorded ``automatic=True``.

Each node runs a second application, ``slow``: a script that ignores SIGTERM while its node's
``hold-term`` file exists (its stop then takes its whole grace: a window before the pivot) and
that cannot start while the script is moved away (a step after the pivot that fails).
One pair for the module; the tests run in order."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
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
    empty_bus,
    leader_ready,
    wait_saga,
)
from tandem.events.embedded import NatsServer, free_port

pytestmark = pytest.mark.system

CLUSTER = "dayone"

SLOW = """\
import os, signal, sys, time
hold = sys.argv[1]
def on_term(*_):
    if not os.path.exists(hold):
        sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
while True:
    time.sleep(3600)
"""


def slow_app(tmp: Path, node: str) -> str:
    script = tmp / node / "slow.py"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(SLOW)
    argv = [sys.executable, str(script), str(tmp / node / "hold-term")]
    return f"""
[[applications]]
name = "slow"
start = {json.dumps(argv)}
stop_grace_s = 8

[applications.restart]
tries = 0
"""


@pytest.fixture(scope="module")
def pair(nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    tmp = tmp_path_factory.mktemp("day-one-sagas")
    p = Pair(cluster=CLUSTER, tmp=tmp, bus_url=nats_server.url, public_port=free_port())
    try:
        asyncio.run(_fresh_start(p))
        yield p
    finally:
        for node in ("primary", "secondary"):
            (tmp / node / "hold-term").unlink(missing_ok=True)
        p.stop_all()


async def _fresh_start(pair: Pair) -> None:
    await empty_bus(pair.bus_url)
    for node, role in (("primary", "active"), ("secondary", "passive")):
        pair.add_node(node, node, initial_role=role, extra=slow_app(pair.tmp, node)).start()
    # A step failing after the pivot is tried again for 10 s, then the saga needs an operator.
    pair.add_orchestrator(extra_env={"TANDEM_ORCHESTRATOR_FORWARD_BUDGET_S": "10"}).start()
    await leader_ready(pair)
    await both_nodes_ready(pair)


async def tandem(*args: str, pair: Pair) -> subprocess.CompletedProcess[str]:
    """The real ``tandem`` command against this pair's API, with the operator token."""
    api = ("--api", f"http://127.0.0.1:{pair.api_ports[0]}", "--token", OPERATOR)
    command = [sys.executable, "-m", "tandem.cli", *args, *api]
    env = {**os.environ, "COLUMNS": "250"}
    return await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=120, env=env
    )


async def call(pair: Pair, method: str, path: str, body: Any = None, token: str = OPERATOR) -> Any:
    async with pair.api(token=token) as api:
        return await api.request(method, f"/api/v1{path}", json=body)


async def saga(pair: Pair, saga_id: str) -> dict[str, Any]:
    answer = await call(pair, "GET", f"/sagas/{saga_id}")
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


async def step_state(pair: Pair, saga_id: str, name: str) -> str:
    steps = (await saga(pair, saga_id))["steps"]
    return str(next(s["state"] for s in steps if s["name"] == name))


async def stored(pair: Pair, type_: str) -> list[dict[str, Any]]:
    found, after = [], 0
    while True:
        answer = await call(pair, "GET", f"/events?cluster={CLUSTER}&after={after}", token=VIEWER)
        page = answer.json()
        found += [e for e in page if e["type"] == type_]
        if len(page) < 100:
            return found
        after = page[-1]["seq"]


async def switchover(pair: Pair, to: str) -> str:
    answer = await call(pair, "POST", f"/clusters/{CLUSTER}/switchover", {"to": to})
    assert answer.status_code == 202, answer.text
    return str(answer.json()["saga_id"])


@pytest.mark.timeout(300)
async def test_cancel_before_the_pivot_refused_after_it_resume_and_history(pair: Pair) -> None:
    await leader_ready(pair)
    await both_nodes_ready(pair)

    # Bad input: unknown saga or cluster 404, a viewer mutating 403, a bad body 422.
    assert (await call(pair, "POST", "/sagas/nope/cancel")).status_code == 404
    assert (await call(pair, "POST", "/sagas/nope/resume")).status_code == 404
    answer = await call(pair, "GET", "/sagas?cluster=nope", token=VIEWER)
    assert answer.status_code == 404 and "no cluster 'nope'" in answer.text
    assert (await call(pair, "GET", "/sagas?limit=0", token=VIEWER)).status_code == 422
    assert (await call(pair, "POST", "/sagas/nope/cancel", token=VIEWER)).status_code == 403
    answer = await call(pair, "POST", "/sagas/nope/cancel", {"reason": ""})
    assert answer.status_code == 422, answer.text

    # 1. Cancelled before the role change: primary's slow app holds its stop (8 s grace).
    epoch = (await cluster_view(pair))["epoch"]
    (pair.tmp / "primary" / "hold-term").write_text("")
    first = await switchover(pair, "secondary")

    async def stopping() -> bool:
        return await step_state(pair, first, "stop applications") == "running"

    await eventually(stopping, 30, "the switchover stopping primary's applications")
    done = await tandem("saga", "cancel", first, "--reason", "wrong window", pair=pair)
    (pair.tmp / "primary" / "hold-term").unlink()
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"saga {first} cancelled" in done.stdout, done.stdout
    ended = await saga(pair, first)
    assert ended["state"] == "failed"
    assert ended["reason"].startswith("cancelled by operator"), ended["reason"]
    assert "wrong window" in ended["reason"] and "undid stop applications" in ended["reason"]
    view = await cluster_view(pair)
    assert (view["active"], view["epoch"]) == ("primary", epoch)  # the role never moved
    await both_nodes_ready(pair)  # primary serves again: its applications were started again
    again = await call(pair, "POST", f"/sagas/{first}/cancel")
    assert again.status_code == 409 and "is failed: nothing to cancel" in again.text

    # 2. Past the role change: secondary's slow app cannot start (its script is away).
    script = pair.tmp / "secondary" / "slow.py"
    script.rename(script.with_suffix(".away"))
    second = await switchover(pair, "secondary")

    async def pivoted() -> bool:
        return await step_state(pair, second, "change role") == "completed"

    await eventually(pivoted, 60, "the switchover past its role change")
    answer = await call(pair, "POST", f"/sagas/{second}/cancel", {"reason": "too late"})
    assert answer.status_code == 409, answer.text
    assert "past its pivot: step 3 (change role) changed the role" in answer.text
    assert "only goes forward" in answer.text
    answer = await call(pair, "POST", f"/sagas/{second}/resume")
    assert answer.status_code == 409 and "is running: only a saga stopped" in answer.text
    stopped = await wait_saga(pair, second, timeout=90)
    assert stopped["state"] == "needs_operator", stopped
    shown = await tandem("status", "--cluster", CLUSTER, pair=pair)
    assert shown.returncode == 0, shown.stderr
    assert "alert saga.stuck" in shown.stdout, shown.stdout
    assert f"once fixed: tandem saga resume {second}" in shown.stdout, shown.stdout

    # Fixed: resumed from the step it reached, it completes and its alert clears.
    script.with_suffix(".away").rename(script)
    done = await tandem("saga", "resume", second, "--reason", "script back", pair=pair)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"saga {second} resumed from step 7 (start applications)" in done.stdout
    view = await cluster_view(pair)
    assert view["active"] == "secondary", view
    assert "saga.stuck" not in {a["code"] for a in view["alerts"]}, view["alerts"]
    # Cleared by an event (whoever follows alerts sees it end), as it was raised.
    [stuck] = [e for e in await stored(pair, "AlertRaised") if e["payload"]["code"] == "saga.stuck"]
    [resolved] = [e for e in await stored(pair, "AlertCleared") if e["correlation_id"] == second]
    assert resolved["payload"]["subject"] == stuck["payload"]["subject"] == second
    assert resolved["node"] == stuck["node"], (resolved, stuck)
    assert resolved["payload"]["reason"].startswith("resolved: switchover of"), resolved

    # History: newest first, with who, why, how long and how each ended.
    answer = await call(pair, "GET", f"/sagas?cluster={CLUSTER}", token=VIEWER)
    assert answer.status_code == 200, answer.text
    latest, cancelled = answer.json()[:2]
    assert (latest["id"], latest["outcome"], latest["resumes"]) == (second, "completed", 1)
    assert (cancelled["id"], cancelled["outcome"]) == (first, "cancelled")
    for entry in (latest, cancelled):
        assert entry["who"].startswith("operator:") and not entry["automatic"]
        assert entry["kind"] == "switchover" and entry["duration_s"] > 0
        assert (entry["from_node"], entry["to_node"]) == ("primary", "secondary")
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    answer = await call(pair, "GET", "/sagas", token=VIEWER)  # no cluster: every cluster's
    assert {s["id"] for s in answer.json()} >= {first, second}
    async with pair.api(token=VIEWER) as api:
        answer = await api.get("/api/v1/sagas", params={"since": future})
    assert answer.status_code == 200 and answer.json() == []
    listed = await tandem("history", "--cluster", CLUSTER, "--since", "1h", pair=pair)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert any(first in line and "cancelled" in line for line in lines), listed.stdout
    assert any(second in line and "completed" in line for line in lines), listed.stdout
    bad = await tandem("history", "--since", "yesterday", pair=pair)
    assert bad.returncode == 2 and "neither a time" in bad.stderr

    # The overview: machine-readable, and one line per cluster.
    shown = await tandem("status", "--cluster", CLUSTER, "--json", pair=pair)
    assert shown.returncode == 0, shown.stderr
    nodes = {n["name"]: n for n in json.loads(shown.stdout)["nodes"]}
    assert nodes["secondary"]["role"] == "active" and nodes["secondary"]["role_since"]
    assert nodes["primary"]["heartbeat_age_s"] is not None
    assert nodes["primary"]["lease_age_s"] is not None
    listed = await tandem("list", pair=pair)
    assert listed.returncode == 0, listed.stderr
    assert f"{CLUSTER}  " in listed.stdout and "secondary*" in listed.stdout, listed.stdout

    async def audited() -> bool:
        actions = [e["payload"]["action"] for e in await stored(pair, "OperatorActionRecorded")]
        return {"saga_cancel", "saga_resume"} <= set(actions)

    await eventually(audited, 30, "the cancels and the resume audited on the cluster")


def _lose_node(pair: Pair, node: str) -> None:
    """The node is gone: its agent and its applications are killed without a word."""
    agent = pair.agents[node].proc
    assert agent is not None
    agent.kill()
    agent.wait(10)
    for app in ("web", "slow"):
        pid = read_pid(pair.tmp / node / "state" / "apps" / f"{app}.pid")
        if pid is not None:
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass


@pytest.mark.timeout(240)
async def test_an_automatic_failover_is_recorded_automatic(pair: Pair) -> None:
    await leader_ready(pair)
    await both_nodes_ready(pair)
    old = (await cluster_view(pair))["active"]
    new = "primary" if old == "secondary" else "secondary"
    _lose_node(pair, old)

    async def failover() -> list[dict[str, Any]]:
        return [s for s in await stored(pair, "SagaStarted") if s["payload"]["kind"] == "failover"]

    async def started() -> bool:
        return bool(await failover())

    await eventually(started, 60, "an automatic failover")
    (event,) = await failover()
    assert event["payload"]["automatic"] is True, event
    ended = await wait_saga(pair, event["payload"]["saga_id"], timeout=90)
    assert ended["state"] == "completed", ended
    view = await cluster_view(pair)
    assert view["active"] == new
    lost = next(n for n in view["nodes"] if n["name"] == old)
    assert not lost["awaiting_operator"]  # gone and fenced: nothing waits for it
    answer = await call(pair, "GET", f"/sagas?cluster={CLUSTER}&limit=1", token=VIEWER)
    (entry,) = answer.json()
    assert (entry["kind"], entry["who"], entry["automatic"]) == ("failover", "orchestrator", True)
    assert f"{old} silent" in entry["reason"], entry
