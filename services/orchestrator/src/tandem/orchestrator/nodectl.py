"""An operator's control of nodes (issue 18 items 4 and 5): ``reinstate`` a node left behind
(the old Active of an automatic switchover, or any Passive out of sync) as a verified and
synchronized Passive; ``cleanup`` what waits for an operator (a stale fence, an awaiting
node, open ``saga.stuck`` / ``fence.failed`` alerts, the agents' restart ladders); and
``control_apps``: stop, start or restart the applications on the Active.

A mixin of ``Orchestrator``. The orchestrator sends the commands (over the bus, at the
cluster's epoch: the node's ``CommandServer`` refuses an older one and any sender but the
orchestrator or the admin) and records what changed (``NodeReinstated``, ``NodeCleanedUp``,
``AlertCleared``); the API records the request (``OperatorActionRecorded``).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from pydantic import Field

from tandem.events.bus import Bus
from tandem.events.catalog import (
    AlertCleared,
    CleanUpNode,
    ControlApplications,
    NodeCleanedUp,
    NodeReinstated,
    ReinstateReplica,
    VerifyReplica,
)
from tandem.events.catalog.alerts import AlertClearedPayload
from tandem.events.catalog.commands import VerifyReplicaPayload
from tandem.events.catalog.node_control import (
    AppAction,
    CleanUpNodePayload,
    ControlApplicationsPayload,
    NodeCleanedUpPayload,
    NodeControlPayload,
    NodeReinstatedPayload,
)
from tandem.events.envelope import Command, CommandResult, Event
from tandem.events.errors import CommandFailedError
from tandem.events.rpc import send_command
from tandem.orchestrator.facade import ConflictError, NotFoundError
from tandem.orchestrator.liveness import Liveness
from tandem.orchestrator.publishing import Publisher, lost_is_conflict
from tandem.orchestrator.settings import OrchestratorSettings
from tandem.orchestrator.state import ClusterState
from tandem.orchestrator.state_records import OPERATOR_ALERTS, ClusterRecord
from tandem.orchestrator.views import NodeView, _View

log = logging.getLogger(__name__)

#: A verify of a reinstated node may take this long (its whole folder compared).
VERIFY_TIMEOUT_S = 120.0
#: Added to a command's own deadline for the request's round trip.
SLACK_S = 5.0


class ReinstateAnswer(_View):
    cluster: str
    node: str
    #: The Active that verified and synchronized it.
    source: str
    replication: str
    verify: str
    message: str


class CleanupAnswer(_View):
    cluster: str
    node: str | None = None
    unfenced: list[str] = Field(default_factory=list)
    released: list[str] = Field(default_factory=list)
    alerts: list[str] = Field(default_factory=list)
    ladders_reset: list[str] = Field(default_factory=list)
    #: What was left as it is, and why (a node the guard holds fenced, a node not alive...).
    kept: dict[str, str] = Field(default_factory=dict)
    message: str


class AppControlAnswer(_View):
    cluster: str
    node: str
    action: str
    applications: list[str] = Field(default_factory=list)
    ok: bool
    detail: str
    message: str


class NodeControlActions:
    """Reinstate, cleanup and application control (a mixin: it reads what ``Orchestrator``
    sets)."""

    bus: Bus
    s: OrchestratorSettings
    state: ClusterState
    liveness: Liveness
    publisher: Publisher
    _starting: asyncio.Lock

    if TYPE_CHECKING:  # provided by Orchestrator and OrchestratorViews

        def _known(self, cluster: str) -> bool: ...
        def _node_names(self, cluster: str) -> list[str]: ...
        def _node_view(self, cluster: str, name: str) -> NodeView: ...
        def _require_leader(self) -> None: ...
        def is_leader(self) -> bool: ...

    # -- helpers --------------------------------------------------------------------------

    def _control_cluster(self, cluster: str, node: str | None = None) -> ClusterRecord:
        self._require_leader()
        if not self._known(cluster):
            raise NotFoundError(f"no cluster {cluster!r}")
        if node is not None and node not in self._node_names(cluster):
            raise NotFoundError(f"cluster {cluster} has no node {node!r}")
        return self.state.cluster(cluster)

    def _no_saga(self, cluster: str, what: str) -> None:
        running = self.state.running_saga(cluster)
        if running is not None:
            raise ConflictError(
                f"a {running.kind} saga ({running.id}) runs on {cluster}: no {what} until it ends"
            )

    async def _send(self, command: Command, timeout_s: float) -> CommandResult:
        try:
            return await send_command(
                self.bus,
                command,
                timeout=timeout_s + SLACK_S,
                retry_for_s=timeout_s + SLACK_S,
                keep_going=self.is_leader,
            )
        except CommandFailedError as exc:
            raise ConflictError(f"{command.node} did not answer {command.type}: {exc}") from None

    async def _store(self, event: Event, what: str) -> None:
        await self.publisher.stored(event, keep_going=self.is_leader, what=what)
        self.state.apply(event)  # the answer (and the next request) sees it

    # -- reinstate ------------------------------------------------------------------------

    async def reinstate(self, cluster: str, node: str, actor: str, reason: str) -> ReinstateAnswer:
        async with self._starting, lost_is_conflict():
            rec = self._control_cluster(cluster, node)
            if rec.active is None:
                raise ConflictError(f"{cluster} has no Active: nothing to replicate from")
            if node == rec.active:
                raise ConflictError(f"{node} is the Active of {cluster}: nothing to reinstate")
            if not self.liveness.alive(cluster, node):
                raise ConflictError(
                    f"{node} is not alive (no heartbeat): start its agent, then reinstate it"
                )
            if not self.liveness.alive(cluster, rec.active):
                raise ConflictError(
                    f"the Active {rec.active} is not alive: nothing can verify {node} now"
                )
            self._no_saga(cluster, "reinstate")
            active, epoch = rec.active, rec.epoch
        why = f"reinstate of {node} by {actor}: {reason}"
        timeout = self.s.step_timeout_s
        replicating = await self._send(
            ReinstateReplica(
                cluster=cluster,
                node=node,
                epoch=epoch,
                payload=NodeControlPayload(reason=why, timeout_s=timeout),
            ),
            timeout,
        )
        if not replicating.ok:
            raise ConflictError(f"{node} cannot replicate as a Passive: {replicating.reason}")
        verified = await self._send(
            VerifyReplica(
                cluster=cluster,
                node=active,
                epoch=epoch,
                payload=VerifyReplicaPayload(target=node, reason=why),
            ),
            VERIFY_TIMEOUT_S,
        )
        if not verified.ok:
            raise ConflictError(
                f"{node} replicates from {active} again, but its verify failed: "
                f"{verified.reason}; reinstate it again"
            )
        async with lost_is_conflict():
            self._require_leader()
            await self._store(
                NodeReinstated(
                    cluster=cluster,
                    node=self.s.instance,
                    epoch=epoch,
                    payload=NodeReinstatedPayload(
                        target=node,
                        source=active,
                        by=actor,
                        reason=reason,
                        detail=verified.reason,
                    ),
                ),
                f"NodeReinstated of {cluster}/{node}",
            )
        log.info("%s/%s reinstated by %s: %s", cluster, node, actor, verified.reason)
        return ReinstateAnswer(
            cluster=cluster,
            node=node,
            source=active,
            replication=replicating.reason,
            verify=verified.reason,
            message=f"{node} is a Passive of {active} again, verified and synchronized",
        )

    # -- cleanup --------------------------------------------------------------------------

    async def cleanup(
        self, cluster: str, node: str | None, actor: str, reason: str
    ) -> CleanupAnswer:
        async with self._starting, lost_is_conflict():
            rec = self._control_cluster(cluster, node)
            names = [node] if node is not None else self._node_names(cluster)
            unfenced: list[str] = []
            released = [name for name in names if rec.node(name).awaiting_operator]
            kept: dict[str, str] = {}
            open_ = [a for a in rec.alerts.values() if a.code in OPERATOR_ALERTS]
            alerts = [a.code for a in open_]
            epoch = rec.epoch
            last = self.state.last_saga(cluster)
            if last is not None and last.state == "needs_operator":
                # Not undone nor finished by a cleanup: the saga itself must go on.
                kept[f"saga {last.id}"] = (
                    f"the {last.kind} stopped for an operator ({last.reason or 'no reason'}): "
                    f"carry it on with tandem saga resume {last.id}"
                )
        ladders: list[str] = []
        for name in names:
            n = rec.node(name)
            if not self.liveness.alive(cluster, name):
                kept[name] = f"{name} is not alive: its restart ladders were not reset" + (
                    "; it is recorded fenced and whether it still is cannot be told"
                    if n.fenced
                    else ""
                )
                continue
            # The node judges its own fence: only one taken at an epoch the role record has
            # left since is cleared (never one its lease keeper and guard hold).
            command = CleanUpNode(
                cluster=cluster,
                node=name,
                epoch=epoch,
                payload=CleanUpNodePayload(reason=f"cleanup by {actor}: {reason}"),
            )
            try:
                result = await self._send(command, self.s.step_timeout_s)
            except ConflictError as exc:  # no answer: the others are still cleaned up
                kept[name] = str(exc)
                continue
            if not result.ok:
                kept[name] = f"{name} answered: {result.reason}"
                continue
            ladders.append(name)
            if result.data.get("kept"):
                kept[name] = str(result.data["kept"])
            elif result.data.get("unfenced") or n.fenced:
                # Cleared by the node, or only the record still said so (its heartbeat not).
                unfenced.append(name)
        async with lost_is_conflict():
            self._require_leader()
            for alert in open_:
                # As raised (node and subject: its fingerprint), whichever replica raised it.
                await self._store(
                    AlertCleared(
                        cluster=cluster,
                        node=alert.node,
                        epoch=epoch,
                        payload=AlertClearedPayload(
                            code=alert.code,
                            subject=alert.subject,
                            reason=f"cleared by {actor}: {reason}",
                        ),
                    ),
                    f"AlertCleared {alert.code} of {cluster}",
                )
            await self._store(
                NodeCleanedUp(
                    cluster=cluster,
                    node=self.s.instance,
                    epoch=epoch,
                    payload=NodeCleanedUpPayload(
                        target=node,
                        by=actor,
                        reason=reason,
                        unfenced=unfenced,
                        released=released,
                        alerts=alerts,
                        ladders_reset=ladders,
                    ),
                ),
                f"NodeCleanedUp of {cluster}",
            )
        said = [
            f"{label}: {', '.join(items)}"
            for label, items in (
                ("stale fence cleared", unfenced),
                ("no longer awaiting an operator", released),
                ("alerts cleared", alerts),
                ("restart ladders reset", ladders),
            )
            if items
        ]
        log.info("%s cleaned up by %s (%s): %s", cluster, actor, reason, "; ".join(said))
        return CleanupAnswer(
            cluster=cluster,
            node=node,
            unfenced=unfenced,
            released=released,
            alerts=alerts,
            ladders_reset=ladders,
            kept=kept,
            message=f"{cluster}: " + ("; ".join(said) or "nothing to clear"),
        )

    # -- applications ---------------------------------------------------------------------

    async def control_apps(
        self, cluster: str, action: AppAction, app: str | None, actor: str, reason: str
    ) -> AppControlAnswer:
        async with self._starting, lost_is_conflict():
            rec = self._control_cluster(cluster)
            active = rec.active
            if active is None:
                raise ConflictError(f"{cluster} has no Active: no application runs")
            if not self.liveness.alive(cluster, active):
                raise ConflictError(f"the Active {active} is not alive (no heartbeat)")
            self._no_saga(cluster, f"application {action}")
            epoch = rec.epoch
        timeout = self.s.step_timeout_s * (2 if action == "restart" else 1)
        result = await self._send(
            ControlApplications(
                cluster=cluster,
                node=active,
                epoch=epoch,
                payload=ControlApplicationsPayload(
                    action=action,
                    applications=[app] if app else [],
                    reason=f"{action} by {actor}: {reason}",
                    timeout_s=timeout,
                ),
            ),
            timeout,
        )
        if result.data.get("unknown"):
            raise NotFoundError(result.reason)
        if result.data.get("refused"):
            raise ConflictError(result.reason)
        names = [str(n) for n in result.data.get("applications", [])]
        what = ", ".join(names) or "no application"
        verb = {"stop": "stopped", "start": "started", "restart": "restarted"}[action]
        message = f"{what} {verb} on {active}" if result.ok else f"{action} on {active} failed"
        log.info("%s/%s: %s by %s: %s", cluster, active, action, actor, result.reason)
        return AppControlAnswer(
            cluster=cluster,
            node=active,
            action=action,
            applications=names,
            ok=result.ok,
            detail=result.reason,
            message=message,
        )
