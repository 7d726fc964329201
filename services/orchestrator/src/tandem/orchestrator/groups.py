"""Application groups: a group switchover moves its member clusters one by one, in priority
order, a member only after the members it depends on are up on their new Active (the white
paper's SQL Server before SharePoint). Each member moves by its own switchover saga, a child
of the group saga. When a member fails, the group saga stops there and, with
``on_failure = "compensate"``, moves the members already moved back, in reverse.

A group switchover may be *directed* (``to``: an identity, e.g. ``secondary`` for a DR
site): each member moves to its node of that identity, and a member already Active there is
skipped (its step completes, moving nothing), so that asking twice is harmless. The
direction is kept in the plan itself (the step's name), so a new leader resuming the saga
moves the members the same way.

A group's service status is the worst of its members' (``group_service``), its reason
naming the member; the group's own saga stopped for an operator makes it needs_operator.
"""

from __future__ import annotations

from collections.abc import Sequence

from tandem.events.catalog.sagas import SagaStepSpec
from tandem.events.catalog.vocabulary import Identity
from tandem.orchestrator.service_status import LastSaga, worst_service
from tandem.orchestrator.settings import GroupConfig
from tandem.orchestrator.views import ServiceStatus

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


def member_step_name(cluster: str, to: Identity | None) -> str:
    """``switchover <cluster>``, or ``switchover <cluster> to <identity>`` when directed."""
    return f"switchover {cluster}" if to is None else f"switchover {cluster} to {to}"


def member_target(spec: SagaStepSpec) -> Identity | None:
    """The identity a directed group saga moves this member to; None when undirected.

    Raises ValueError for a step name naming no identity (a plan this code did not write).
    """
    prefix = f"switchover {spec.node} to "
    if not spec.name.startswith(prefix):
        return None
    return Identity(spec.name.removeprefix(prefix))


def group_plan(
    group: GroupConfig, *, timeout_s: float, to: Identity | None = None
) -> list[SagaStepSpec]:
    undo = MEMBER_SWITCH_BACK if group.on_failure == "compensate" else None
    return [
        SagaStepSpec(
            name=member_step_name(cluster, to),
            node=cluster,
            command=MEMBER_SWITCHOVER,
            timeout_s=timeout_s,
            epoch=0,
            compensation=undo,
        )
        for cluster in member_order(group)
    ]


def group_service(
    members: Sequence[tuple[str, ServiceStatus, str]], last_saga: LastSaga | None = None
) -> tuple[ServiceStatus, str]:
    """The worst of ``(cluster, status, reason)`` of the members, the reason naming it."""
    if last_saga is not None and last_saga.state == "needs_operator":
        why = f": {last_saga.reason}" if last_saga.reason else ""
        what = f"{last_saga.kind.replace('_', ' ')} {last_saga.id} stopped for an operator"
        return ServiceStatus.NEEDS_OPERATOR, f"needs an operator: {what}{why}"
    if not members:
        return ServiceStatus.DOWN, "the group has no member"
    status = worst_service([m[1] for m in members])
    if status is ServiceStatus.SERVING:
        return status, f"every member serves ({', '.join(m[0] for m in members)})"
    bad = [m for m in members if m[1] is status]
    first, more = bad[0], len(bad) - 1
    others = f" (and {more} more member{'s' if more > 1 else ''} {status})" if more else ""
    return status, f"{first[0]} is {status}: {first[2]}{others}"
