"""The lag history: what is sampled (targets only), what is kept (the window) and read."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from tandem.orchestrator.lag_history import LagHistory
from tandem.orchestrator.views import ClusterView, NodeView


def pair(active: str, lag: int, lag_s: float | None) -> ClusterView:
    nodes = [
        NodeView(name=n, alive=True, lag_bytes=0 if n == active else lag, lag_oldest_age_s=lag_s)
        for n in ("a", "b")
    ]
    return ClusterView(name="c", active=active, nodes=nodes)


def test_targets_are_sampled_kept_for_the_window_and_read_since_a_time() -> None:
    now = [1000.0]
    views = [pair("a", 10, 0.5)]

    async def each_cluster(visit: Callable[[ClusterView], object]) -> None:
        for view in views:
            visit(view)

    history = LagHistory(each_cluster, every_s=10, keep_s=60, clock=lambda: now[0])
    asyncio.run(history.sample())
    now[0] += 30
    views[:] = [pair("a", 20, None)]
    asyncio.run(history.sample())
    assert history.of("c", 0) == {"b": [(1000.0, 10, 0.5), (1030.0, 20, None)]}
    assert history.of("c", 1001) == {"b": [(1030.0, 20, None)]}
    assert history.of("other", 0) == {}
    # A switchover: b is Active now, a the target; b's samples age out of the window.
    now[0] += 40
    views[:] = [pair("b", 5, 0.1)]
    asyncio.run(history.sample())
    assert history.of("c", 0) == {"a": [(1070.0, 5, 0.1)], "b": [(1030.0, 20, None)]}
    now[0] += 40
    asyncio.run(history.sample())
    assert history.of("c", 0) == {"a": [(1070.0, 5, 0.1), (1110.0, 5, 0.1)]}
