"""A switchover that failed before its role change while the old Active was down: the saga
stopped the node's applications, then its undo could not be sent (the node's agent was
SIGKILLed mid-drain; seen in the chaos run, scenario 98). The role record still names the
node Active at its epoch, no saga runs, and the restarted agent must bring itself back
instead of waiting for that saga's steps for ever.

The saga's outcome is written to the stream here as the orchestrator writes it (that part,
the step failing at once and the undo not sent, is ``test_saga_bus_faults``); the agent, the
demo app, the orchestrator (managed mode: it moves nothing by itself) and nats-server are real.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_rig import EventRecorder
from helpers import eventually
from orchestrator_rig import Pair, cluster_view, public_get, start_pair
from tandem.events.bus import Bus
from tandem.events.catalog import SagaFailed, SagaStarted
from tandem.events.catalog.sagas import SagaEndedPayload, SagaKind, SagaStartedPayload
from tandem.events.embedded import NatsServer, free_port

pytestmark = pytest.mark.system

SAGA = "01a23733-ffaa-7e7c-a4af-000000000098"


@pytest.fixture
def pair(nats_server: NatsServer, tmp_path: Path) -> Iterator[Pair]:
    p = Pair(cluster="left-stopped", tmp=tmp_path, bus_url=nats_server.url, public_port=free_port())
    yield p
    p.stop_all()


async def _serves(pair: Pair, node: str) -> bool:
    view = await cluster_view(pair)
    assert pair.public_port is not None
    got = await public_get(pair.public_port, "/health")
    return f"{node} serves" in view["service_reason"] and got is not None and got.is_success


async def test_an_active_left_stopped_by_a_failed_saga_brings_itself_back(
    bus: Bus, pair: Pair
) -> None:
    rec = await EventRecorder().start(bus, pair.cluster)
    await start_pair(pair, '\n[failover]\nmode = "managed"\n')
    started = SagaStartedPayload(
        saga_id=SAGA, kind=SagaKind.SWITCHOVER, from_node="primary", to_node="secondary",
        steps=["stop applications", "drain send queue"], reason="test: an operator's switchover",
    )  # fmt: skip
    await bus.publish(SagaStarted(cluster=pair.cluster, node="orchestrator", payload=started))
    # Step 0 stopped primary's applications (the agent wrote that down), then its agent died.
    agent = pair.agents["primary"]
    assert agent.proc is not None
    agent.proc.kill()
    agent.proc.wait(10)
    (pair.tmp / "primary" / "state" / "steered-by-saga").write_text("1\n")
    failed = SagaEndedPayload(
        saga_id=SAGA,
        reason="step 1 (drain send queue) failed: primary is gone; compensated: undo of stop "
        "applications failed: primary is gone; StartApplications not sent",
    )
    await bus.publish(SagaFailed(cluster=pair.cluster, node="orchestrator", payload=failed))
    agent.start()
    await eventually(lambda: _serves(pair, "primary"), 90, "primary serving again")
    log = (pair.tmp / "primary" / "agent.log").read_text()
    assert "the saga that took it down at epoch 1 has ended" in log
    assert not rec.of("SagaStarted", kind="failover")  # nothing moved meanwhile
    await rec.stop()
