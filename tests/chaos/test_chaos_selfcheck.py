"""The chaos checkers checked against known outcomes, on real parts: events published through
the bus and read back (none lost), then one that reaches live subscribers but that JetStream
refuses to store (a failed ``Nats-Expected-Last-Sequence``: exactly that one reported); two
demo apps started at once on purpose (a split window naming both); a real process dying with a
traceback (a crash naming the exception). If these fail, a chaos finding may be a harness bug;
while they pass, a chaos finding is the product's."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest
from chaos_checkers import check_crashes, check_events, check_sagas, check_split
from chaos_observe import BusWatch, Sampler, Seen
from chaos_procs import Proc

from helpers import alert
from pair_state import http_status
from tandem.events.bus import Bus, event_headers
from tandem.events.embedded import NatsServer, free_port
from tandem.events.settings import load_bus_settings
from tandem.events.subjects import event_subject

pytestmark = pytest.mark.system


@pytest.mark.timeout(60)
async def test_the_event_checker_finds_exactly_the_event_missing_from_the_stream(
    bus: Bus, nats_server: NatsServer
) -> None:
    import asyncio

    watch = BusWatch(load_bus_settings(servers=[nats_server.url]), "chaos").start()
    try:
        events = [alert(cluster="chaos", n=i) for i in range(5)]
        for e in events:
            await bus.publish(e)
        await asyncio.to_thread(_until, lambda: len(watch.seen) == 5)
        assert [e.id for e in watch.seen] == [e.id for e in events]
        stored = await asyncio.to_thread(watch.stored)
        assert check_events(watch.seen, stored) == [], "a known-good publish reported lost"
        lost = alert(cluster="chaos", n=99)
        headers = {**event_headers(lost), "Nats-Expected-Last-Sequence": "1"}
        answer = await bus.nc.request(
            event_subject("chaos", lost.type),
            lost.model_dump_json().encode(),
            headers=headers,
            timeout=5,
        )
        assert b"wrong last sequence" in answer.data, answer.data  # refused by the stream
        await asyncio.to_thread(_until, lambda: len(watch.seen) == 6)
        stored = await asyncio.to_thread(watch.stored)
        found = check_events(watch.seen, stored)
        assert [v.checker for v in found] == ["lost_events"]
        assert [e["id"] for e in found[0].detail["events"]] == [lost.id]
    finally:
        await asyncio.to_thread(watch.close)


@pytest.mark.timeout(60)
def test_the_split_checker_sees_a_forced_double_start(tmp_path: Path) -> None:
    ports = {"primary": free_port(), "secondary": free_port()}
    apps = {}
    for node, port in ports.items():
        argv = [sys.executable, "-m", "tandem.agent.demoapp", "--data", str(tmp_path / node)]
        apps[node] = Proc(f"app-{node}", [*argv, "--port", str(port)], {}, tmp_path / f"{node}.log")
    sampler = Sampler(ports, public_port=free_port()).start()
    try:
        apps["primary"].start()
        _until(lambda: http_status(ports["primary"]) == 200)
        time.sleep(0.5)
        assert check_split(sampler.samples, 0) == [], "one app serving reported as a split"
        apps["secondary"].start()  # the forced double start
        _until(lambda: http_status(ports["secondary"]) == 200)
        time.sleep(0.5)
        apps["primary"].kill()
        time.sleep(0.5)
    finally:
        sampler.stop()
        for app in apps.values():
            app.kill()
    found = check_split(sampler.samples, 0)
    assert len(found) == 1, [str(v) for v in found]
    assert found[0].detail["nodes"] == ["primary", "secondary"]


@pytest.mark.timeout(60)
def test_the_crash_checker_names_the_exception_of_a_process_that_died(tmp_path: Path) -> None:
    code = "import logging; logging.basicConfig(); raise RuntimeError('bus call timed out')"
    proc = Proc("agent-x", [sys.executable, "-c", code], {}, tmp_path / "x.log").start()
    _until(lambda: not proc.running())
    ended = proc.reap()
    assert ended is not None and not ended.expected
    found = check_crashes([ended], {"agent-x": proc.log_since(0)})
    assert [v.checker for v in found] == ["crashes", "tracebacks"]
    assert "exited with 1" in found[0].message
    assert "RuntimeError: bus call timed out" in found[0].message
    killed = Proc(
        "agent-y", [sys.executable, "-c", "import time; time.sleep(60)"], {}, tmp_path / "y.log"
    ).start()
    killed.kill()
    assert killed.exits[-1].expected, "a SIGKILL by the nemesis counted as a crash"


def _until(check, timeout: float = 20) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _seen(type_: str, payload: dict, n: int) -> Seen:  # type: ignore[type-arg]
    return Seen(id=f"e{n}", type=type_, node=None, occurred_at="t", correlation_id=None,
                payload=payload, received=float(n), seq=n)  # fmt: skip


def _saga_failed_after_pivot(reason: str, later_epoch: int | None) -> list[Seen]:
    plan = [{"command": "StopApplications", "epoch": 4}, {"command": "ChangeRole",
            "epoch": 5, "pivot": True}, {"command": "Expose", "epoch": 5}]  # fmt: skip
    events = [
        _seen("SagaStarted", {"saga_id": "s1", "kind": "switchover", "plan": plan}, 1),
        _seen("SagaStepCompleted", {"saga_id": "s1", "command": "ChangeRole"}, 2),
    ]
    if later_epoch is not None:
        events.append(_seen("RoleChanged", {"new_epoch": later_epoch}, 3))
    events.append(_seen("SagaFailed", {"saga_id": "s1", "reason": reason}, 4))
    return events


def test_the_saga_checker_excuses_a_superseded_saga_only_with_the_later_role_change() -> None:
    """A saga that failed after its pivot is a violation, unless it says it was superseded
    and the stream holds the later role change (epoch 6 here) that superseded it."""
    superseded = "superseded: the role record names primary Active at epoch 6"
    assert check_sagas(_saga_failed_after_pivot(superseded, later_epoch=6)) == []
    [claimed] = check_sagas(_saga_failed_after_pivot(superseded, later_epoch=None))
    assert "failed after its pivot" in claimed.message
    [stuck] = check_sagas(_saga_failed_after_pivot("step 2 (expose) failed", later_epoch=6))
    assert "failed after its pivot" in stuck.message
