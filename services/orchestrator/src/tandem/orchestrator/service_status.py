"""What a client of a cluster would see: its *service status*, folded from the cluster's view.

``serving``: the node the role record names Active says it plays Active, is alive, not
fenced nor isolated, its checks pass (health ok) and its public identity is exposed.
``degraded``: serving, but protection is reduced (a Passive missing, dead, fenced or not in
sync, a check warning). ``down``: nobody serves. ``needs_operator``: the cluster's last saga
stopped for an operator, or a ``saga.stuck`` / ``fence.failed`` alert of it is open, or
nobody serves and a failover waits for an operator's confirmation (managed mode); the
reason still says whether anyone serves meanwhile.

Whether the public identity is exposed is not reported separately by any event or
heartbeat: the agent sets its role Active (``NodeRoleAssumed``, the heartbeat's ``role``) only
once expose took effect, so a node reporting role Active is taken as exposed.

Per target, the replication state shown is ``in_sync`` / ``catching_up`` / ``out_of_sync`` /
``stopped`` (the catalog's ``ReplicaState`` mapped: syncing -> catching_up, paused or the
target not heard from -> stopped), with the lag not yet applied by that target (its receive
queue, plus the Active's send queue that no target has yet) and the age of the oldest change
in it (the older of the two queues' oldest, as the nodes measured it; unknown when the target
is not heard from); 0 and no state on the Active.

Everything here is pure: functions of views and records, no clock, no bus.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from tandem.events.catalog.vocabulary import HealthStatus, ReplicaState, Role
from tandem.orchestrator.state_records import OPERATOR_ALERTS, AlertRecord
from tandem.orchestrator.views import NodeView, PendingFailover, ReplicationState, ServiceStatus

#: Better first: a group is as bad as its worst member.
SERVICE_ORDER = [
    ServiceStatus.SERVING,
    ServiceStatus.DEGRADED,
    ServiceStatus.DOWN,
    ServiceStatus.NEEDS_OPERATOR,
]

_REPORTED: dict[ReplicaState, ReplicationState] = {
    ReplicaState.IN_SYNC: "in_sync",
    ReplicaState.SYNCING: "catching_up",
    ReplicaState.OUT_OF_SYNC: "out_of_sync",
    ReplicaState.PAUSED: "stopped",
}


@dataclass(frozen=True)
class LastSaga:
    """The cluster's most recently started saga, as far as the status cares."""

    id: str
    kind: str
    state: str
    reason: str = ""


@dataclass(frozen=True)
class Replica:
    state: ReplicationState | None
    lag_batches: int
    lag_bytes: int
    #: Seconds since the oldest change not yet applied was captured (0.0 on the Active;
    #: None: unknown, the target is not heard from or does not report it).
    oldest_unapplied_age_s: float | None = None


def replica(
    *,
    is_active: bool,
    alive: bool,
    reported: ReplicaState | None,
    reported_lag: tuple[int, int],
    gauges: Mapping[str, float] | None,
    active_gauges: Mapping[str, float] | None,
) -> Replica:
    """One node's replication as a target.

    ``reported``/``reported_lag``: its last ``ReplicationStateChanged`` (state, batches and
    bytes then). ``gauges``: its live heartbeat's gauges (None when not alive);
    ``active_gauges``: the live Active's (its send queue is not applied anywhere yet).
    The oldest unapplied change's age is live only: no event carries it, so a target without
    live gauges has none (None), not its last known one.
    """
    if is_active:
        return Replica(state=None, lag_batches=0, lag_bytes=0, oldest_unapplied_age_s=0.0)
    batches, size = reported_lag
    age: float | None = None
    if gauges is not None and "receive_queue_batches" in gauges:
        batches = int(gauges.get("receive_queue_batches", 0))
        size = int(gauges.get("receive_queue_bytes", 0))
        age = gauges.get("receive_queue_oldest_age_s")  # None: a replicator too old to say
        if active_gauges is not None:
            batches += int(active_gauges.get("send_queue_batches", 0))
            size += int(active_gauges.get("send_queue_bytes", 0))
            if age is not None:
                age = max(age, active_gauges.get("send_queue_oldest_age_s", 0.0))
    if not alive:
        state: ReplicationState | None = "stopped"
    elif reported is not None:
        state = _REPORTED[reported]
    elif gauges is not None and "receive_queue_batches" in gauges:
        state = "in_sync"  # a target starts in sync and reports only changes from there
    else:
        state = None
    return Replica(
        state=state,
        lag_batches=max(batches, 0),
        lag_bytes=max(size, 0),
        oldest_unapplied_age_s=None if age is None else max(float(age), 0.0),
    )


def _at(when: datetime | None) -> str:
    return f" at {when:%Y-%m-%d %H:%M:%S %Z}".rstrip() if when is not None else ""


def _failing(node: NodeView, level: HealthStatus) -> str:
    names = sorted(k for k, v in node.checks.items() if v is level)
    return ", ".join(f"{k} {level}" for k in names) or f"health {level}"


def _why_not_serving(active: str | None, nodes: Sequence[NodeView]) -> str:
    """Why the Active does not serve; '' when it does."""
    if active is None:
        actives = [n.name for n in nodes if n.role is Role.ACTIVE and n.alive]
        if actives:
            return f"no Active in the role record ({', '.join(actives)} reports role active)"
        return "no node is Active"
    node = next((n for n in nodes if n.name == active), None)
    if node is None:
        return f"{active} (the Active by the role record) never reported"
    if not node.alive:
        last = node.last_heartbeat_at
        since = f" since {last:%Y-%m-%d %H:%M:%S %Z}".rstrip() if last else ""
        return f"{active} (the Active) is not heard from{since}"
    if node.fenced:
        why = f": {node.fenced_reason}" if node.fenced_reason else ""
        return f"{active} fenced itself{_at(node.fenced_since)}{why}"
    if node.role is not Role.ACTIVE:
        plays = f"reports role {node.role}" if node.role else "reports no role"
        return f"{active} is Active by the role record but {plays} (its identity is not exposed)"
    if node.isolated:
        return f"{active} (the Active) is isolated from its network"
    if node.health is HealthStatus.CRITICAL:
        return f"{active}'s application checks fail ({_failing(node, HealthStatus.CRITICAL)})"
    if node.health is not HealthStatus.OK and node.health is not HealthStatus.WARNING:
        if not node.checks:
            # Nothing checks the application: the node serves as far as Tandem can tell, and
            # the missing check is a lack of protection (_protection), not an outage.
            return ""
        return f"{active}'s checks do not pass ({_failing(node, node.health)})"
    return ""


def _protection(active: str, nodes: Sequence[NodeView]) -> tuple[list[str], list[str]]:
    """(what reduces protection, Passives in sync)."""
    problems: list[str] = []
    node = next(n for n in nodes if n.name == active)
    if node.health is HealthStatus.WARNING:
        problems.append(f"{active} has a check warning ({_failing(node, HealthStatus.WARNING)})")
    elif not node.checks and node.health is not HealthStatus.OK:
        problems.append(
            f"{active} reports no application check: nothing confirms its application answers"
        )
    passives = [n for n in nodes if n.name != active]
    if not passives:
        problems.append("no Passive node")
    in_sync = []
    for p in passives:
        if not p.alive:
            problems.append(f"{p.name} is not heard from")
        elif p.fenced:
            problems.append(f"{p.name} is fenced")
        elif p.isolated:
            problems.append(f"{p.name} is isolated")
        elif p.awaiting_operator:
            # Left stopped after a switchover: in sync or not, it takes over nothing by itself.
            problems.append(f"{p.name} is left stopped for an operator")
        elif p.replica_state == "in_sync":
            in_sync.append(p.name)
        else:
            state = (p.replica_state or "not reporting replication").replace("_", " ")
            problems.append(f"{p.name} is {state}")
    return problems, in_sync


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def serving_status(active: str | None, nodes: Sequence[NodeView]) -> tuple[ServiceStatus, str]:
    """serving / degraded / down, from the nodes alone."""
    why = _why_not_serving(active, nodes)
    if why or active is None:
        return ServiceStatus.DOWN, f"nobody serves: {why}"
    problems, in_sync = _protection(active, nodes)
    synced = f"; {_and(in_sync)} in sync" if in_sync else ""
    late = next((n.heartbeat_late_s for n in nodes if n.name == active), None)
    if late is not None:
        # Not judged gone yet (that takes the failover timeout), but nothing confirms it
        # serves: saying "serving" now would be a guess.
        return ServiceStatus.DEGRADED, (
            f"{active} serves, unconfirmed: its heartbeats are silent for {late:g}s"
        )
    if problems:
        return ServiceStatus.DEGRADED, f"{active} serves{synced}; but {'; '.join(problems)}"
    return ServiceStatus.SERVING, f"{active} serves{synced}"


def cluster_service(
    active: str | None,
    nodes: Sequence[NodeView],
    last_saga: LastSaga | None = None,
    alerts: Sequence[AlertRecord] = (),
    pending_failover: PendingFailover | None = None,
) -> tuple[ServiceStatus, str]:
    """The cluster's service status and why (see the module's doc). ``last_saga``: the
    saga started last on the cluster (running or ended); ``alerts``: its open alerts, oldest
    first; ``pending_failover``: a failover recommended in managed mode, waiting for an
    operator's confirmation (nobody serves until then: the operator is needed)."""
    status, reason = serving_status(active, nodes)
    if pending_failover is not None and status is ServiceStatus.DOWN:
        return ServiceStatus.NEEDS_OPERATOR, (
            f"needs an operator: failover to {pending_failover.to} recommended"
            f"{_at(pending_failover.recommended_at)} (tandem failover --confirm); {reason}"
        )
    if last_saga is not None and last_saga.state == "running" and status is ServiceStatus.DOWN:
        reason += f" ({last_saga.kind.replace('_', ' ')} {last_saga.id} in progress)"
    open_ = [a for a in alerts if a.code in OPERATOR_ALERTS]
    if last_saga is not None and last_saga.state == "needs_operator":
        what = f"{last_saga.kind.replace('_', ' ')} {last_saga.id} stopped for an operator"
        why = f": {last_saga.reason}" if last_saga.reason else ""
        return ServiceStatus.NEEDS_OPERATOR, f"needs an operator: {what}{why}; {reason}"
    if open_:
        alert = open_[-1]
        msg = f": {alert.message}" if alert.message else ""
        return ServiceStatus.NEEDS_OPERATOR, (
            f"needs an operator: alert {alert.code}{_at(alert.raised_at)}{msg}; {reason}"
        )
    return status, reason


def worst_service(statuses: Sequence[ServiceStatus]) -> ServiceStatus:
    return max(statuses, key=SERVICE_ORDER.index, default=ServiceStatus.DOWN)
