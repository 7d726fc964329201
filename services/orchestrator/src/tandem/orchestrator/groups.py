"""Application groups: a group switchover moves its member clusters one by one, in priority
order, a member only after the members it depends on are up on their new Active (the white
paper's SQL Server before SharePoint). Each member moves by its own switchover saga, a child
of the group saga. When a member fails, the group saga stops there and, with
``on_failure = "compensate"``, moves the members already moved back, in reverse.
"""

from __future__ import annotations

from tandem.events.catalog.sagas import SagaStepSpec
from tandem.orchestrator.settings import GroupConfig

MEMBER_SWITCHOVER = "ClusterSwitchover"
MEMBER_SWITCH_BACK = "ClusterSwitchBack"


def member_order(group: GroupConfig) -> list[str]:
    """Priority order (lower first), each member after its dependencies; ties by name."""
    members = sorted(group.members, key=lambda m: (m.priority, m.cluster))
    placed: list[str] = []
    remaining = list(members)
    while remaining:
        ready = next((m for m in remaining if set(m.depends_on) <= set(placed)), None)
        if ready is None:
            cycle = ", ".join(m.cluster for m in remaining)
            raise ValueError(f"group {group.name}: dependency cycle among {cycle}")
        placed.append(ready.cluster)
        remaining.remove(ready)
    return placed


def group_plan(group: GroupConfig, *, timeout_s: float) -> list[SagaStepSpec]:
    undo = MEMBER_SWITCH_BACK if group.on_failure == "compensate" else None
    return [
        SagaStepSpec(
            name=f"switchover {cluster}",
            node=cluster,
            command=MEMBER_SWITCHOVER,
            timeout_s=timeout_s,
            epoch=0,
            compensation=undo,
        )
        for cluster in member_order(group)
    ]
