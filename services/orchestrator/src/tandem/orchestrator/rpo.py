"""The cluster's recovery point now against its target: what would be lost if the Active
were lost this moment. That is the lag of the target that would take over, so the least
behind of the targets alive; with none alive, everything written from now on."""

from __future__ import annotations

from collections.abc import Sequence

from tandem.events.catalog.vocabulary import ReplicaState
from tandem.orchestrator.views import NodeView, RpoView


def rpo_of(active: str | None, nodes: Sequence[NodeView], target_s: float) -> RpoView:
    if active is None:
        return RpoView(target_s=target_s, why="no Active: nothing is written")
    targets = [n for n in nodes if n.name != active and n.alive]
    if not targets:
        return RpoView(
            target_s=target_s, meeting=False, why="no target is alive: nothing is replicated"
        )
    in_step = [n for n in targets if n.replication is not ReplicaState.OUT_OF_SYNC]
    if not in_step:
        names = ", ".join(n.name for n in targets)
        return RpoView(target_s=target_s, meeting=False, why=f"out of sync: {names}")
    known = [n for n in in_step if n.lag_oldest_age_s is not None]
    if not known:
        return RpoView(target_s=target_s, why="the targets do not report their lag in seconds")
    best = min(known, key=lambda n: n.lag_oldest_age_s or 0.0)
    now = best.lag_oldest_age_s or 0.0
    meeting = now <= target_s
    verdict = "within" if meeting else "over"
    return RpoView(
        target_s=target_s,
        now_s=now,
        meeting=meeting,
        by=best.name,
        why=f"{best.name} is {now:.1f}s behind, {verdict} the {target_s:g}s target",
    )
