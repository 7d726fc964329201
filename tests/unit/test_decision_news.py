"""A decision is said (logged, and its alert raised) once per piece of news: a duration that
grew since is not news. Before, an Active gone with no node to take over raised the alert
``failover.impossible`` at every decision cycle (10 a second), each with "silent for 3.1s",
"3.2s", ... That alert clears once a node can take over (issue 19)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from tandem.events.catalog import AlertCleared, AlertRaised, FailoverRecommended
from tandem.orchestrator.decisions import Decisions
from tandem.orchestrator.facade import ConflictError
from tandem.orchestrator.state import ClusterState


def test_a_grown_duration_is_not_news_but_another_reason_is() -> None:
    d = Decisions(cast(Any, None))
    gone = "pg-2: primary silent for {}s: no heartbeat; no failover: secondary is {}"
    assert d._once("gone:pg-2", gone.format("3.0", "being verified"))
    assert not d._once("gone:pg-2", gone.format("3.1", "being verified"))
    assert not d._once("gone:pg-2", gone.format("12", "being verified"))
    assert d._once("gone:pg-2", gone.format("12.5", "not alive (no heartbeat)"))
    assert d._once("gone:pg-1", gone.format("3.0", "being verified"))  # another cluster


class _Publisher:
    def __init__(self) -> None:
        self.events: list[Any] = []

    async def later(self, event: Any) -> None:
        self.events.append(event)


def _orchestrator(target: str | None) -> Any:
    """Just what ``_active_gone`` reads of the orchestrator: no node fit (``target`` None)
    or one, managed mode (a recommendation, not a saga)."""

    def choose_target(cluster: str, active: str, to: str | None) -> str:
        if target is None:
            raise ConflictError("secondary is not alive (no heartbeat)")
        return target

    return SimpleNamespace(
        state=ClusterState(),
        publisher=_Publisher(),
        s=SimpleNamespace(instance="orch-a"),
        choose_target=choose_target,
        paused_why=lambda cluster: "",
        liveness=SimpleNamespace(mode=lambda cluster, node: "managed"),
    )


async def test_failover_impossible_clears_once_a_node_can_take_over() -> None:
    """Raised when no node can take over from a lost Active; cleared (as raised: its node)
    once one can, once only."""
    o = _orchestrator(None)
    d = Decisions(o)
    await d._active_gone("pg-2", "primary", "primary silent for 3.0s")
    [raised] = o.publisher.events
    assert isinstance(raised, AlertRaised) and raised.payload.code == "failover.impossible"
    assert raised.fingerprint in o.state.cluster("pg-2").alerts  # folded at once

    o.choose_target = lambda cluster, active, to: "secondary"
    said = await d._active_gone("pg-2", "primary", "primary silent for 5.0s")
    cleared, recommended = o.publisher.events[1:]
    assert isinstance(cleared, AlertCleared) and isinstance(recommended, FailoverRecommended)
    assert cleared.fingerprint == raised.fingerprint
    assert cleared.payload.reason == "secondary can take over from primary"
    assert (
        said[0] == "pg-2: alert failover.impossible cleared: secondary can take over from primary"
    )
    assert not o.state.cluster("pg-2").alerts
    assert await d._clear("pg-2", "failover.impossible", "again") == []  # once
