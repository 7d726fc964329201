"""Liveness keeps each cluster's nodes beside what it saw, however an entry comes or goes
(a cluster's view reads them instead of scanning every node)."""

from __future__ import annotations

from tandem.orchestrator.liveness import Seen, SeenNodes


def test_the_nodes_of_a_cluster_follow_every_way_in_and_out() -> None:
    seen = SeenNodes()
    seen[("a", "n1")] = Seen()
    seen.setdefault(("a", "n2"), Seen())
    seen.setdefault(("b", "n1"), Seen())
    assert seen.by_cluster == {"a": {"n1", "n2"}, "b": {"n1"}}
    del seen[("a", "n1")]
    seen.pop(("b", "n1"))
    seen.pop(("b", "gone"), None)
    assert seen.by_cluster == {"a": {"n2"}}
    seen.clear()
    assert seen.by_cluster == {} and len(seen) == 0
