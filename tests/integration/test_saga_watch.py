"""The node agent's view of whether its cluster's last saga has ended (agent/saga_watch.py),
read from a real stream: what lets a node that a failed saga left stopped bring itself back."""

from __future__ import annotations

from tandem.agent.saga_watch import saga_running
from tandem.events.bus import Bus
from tandem.events.catalog import SagaCompleted, SagaFailed, SagaStarted
from tandem.events.catalog.sagas import SagaEndedPayload, SagaKind, SagaStartedPayload


def _started(cluster: str, saga_id: str) -> SagaStarted:
    payload = SagaStartedPayload(
        saga_id=saga_id, kind=SagaKind.SWITCHOVER, from_node="primary", to_node="secondary",
        steps=["stop applications"], reason="t",
    )  # fmt: skip
    return SagaStarted(cluster=cluster, node="orchestrator", payload=payload)


def _ended(cls: type[SagaCompleted] | type[SagaFailed], cluster: str, saga_id: str):  # type: ignore[no-untyped-def]
    return cls(cluster=cluster, node="orchestrator",
               payload=SagaEndedPayload(saga_id=saga_id, reason="t"))  # fmt: skip


async def test_the_last_saga_started_runs_until_its_end_is_stored(bus: Bus) -> None:
    cluster = "watch"
    assert await saga_running(bus, cluster) is False  # none ever started
    await bus.publish(_started(cluster, "s1"))
    assert await saga_running(bus, cluster) is True
    await bus.publish(_ended(SagaFailed, cluster, "s1"))
    assert await saga_running(bus, cluster) is False
    await bus.publish(_started(cluster, "s2"))  # a later saga: s1's end says nothing of it
    assert await saga_running(bus, cluster) is True
    await bus.publish(_ended(SagaCompleted, cluster, "s2"))
    assert await saga_running(bus, cluster) is False
    assert await saga_running(bus, "other") is False  # another cluster's sagas are not ours
