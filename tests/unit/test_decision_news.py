"""A decision is said (logged, and its alert raised) once per piece of news: a duration that
grew since is not news. Before, an Active gone with no node to take over raised the alert
``failover.impossible`` at every decision cycle (10 a second), each with "silent for 3.1s",
"3.2s", ..."""

from __future__ import annotations

from typing import Any, cast

from tandem.orchestrator.decisions import Decisions


def test_a_grown_duration_is_not_news_but_another_reason_is() -> None:
    d = Decisions(cast(Any, None))
    gone = "pg-2: primary silent for {}s: no heartbeat; no failover: secondary is {}"
    assert d._once("gone:pg-2", gone.format("3.0", "being verified"))
    assert not d._once("gone:pg-2", gone.format("3.1", "being verified"))
    assert not d._once("gone:pg-2", gone.format("12", "being verified"))
    assert d._once("gone:pg-2", gone.format("12.5", "not alive (no heartbeat)"))
    assert d._once("gone:pg-1", gone.format("3.0", "being verified"))  # another cluster
