"""Maintenance: pause a cluster's automatic decisions (no automatic failover nor automatic
switchover; an operator's stay allowed), and keep a node from being chosen as the target of
a switchover or failover (standby). A mixin of ``Orchestrator``; the decisions' side is
``paused_why`` (used by ``decisions.py`` and ``core.switchover``) and ``expire_pauses``.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict

from tandem.events.catalog.maintenance import (
    ClusterPaused,
    ClusterPausedPayload,
    ClusterResumed,
    ClusterResumedPayload,
    NodeStandbyChanged,
    NodeStandbyChangedPayload,
)
from tandem.events.envelope import Event
from tandem.orchestrator.facade import ConflictError, NotFoundError
from tandem.orchestrator.publishing import Publisher, lost_is_conflict
from tandem.orchestrator.settings import OrchestratorSettings
from tandem.orchestrator.state import ClusterState
from tandem.orchestrator.state_records import ClusterRecord
from tandem.orchestrator.views import MaintenanceView

log = logging.getLogger(__name__)

#: Who resumes a cluster whose pause ran out (``ClusterResumed.by``).
EXPIRY_ACTOR = "tandem (pause expired)"
PAUSE_EXPIRED = "pause expired"


class PauseAnswer(BaseModel):
    """The answer of a pause or a resume: the cluster's maintenance now (None: resumed)."""

    model_config = ConfigDict(frozen=True)
    cluster: str
    maintenance: MaintenanceView | None = None
    message: str


class StandbyAnswer(BaseModel):
    """The answer of a standby or unstandby; ``note`` warns when no node is left to take
    over (allowed, but then every switchover and failover is refused)."""

    model_config = ConfigDict(frozen=True)
    cluster: str
    node: str
    standby: bool
    reason: str = ""
    message: str
    note: str = ""


def describe_pause(m: MaintenanceView) -> str:
    until = f" until {m.until.isoformat(timespec='seconds')}" if m.until else " until resumed"
    return f"paused by {m.by} since {m.since.isoformat(timespec='seconds')}{until}: {m.reason}"


class MaintenanceActions:
    """Pause, resume, standby and unstandby (a mixin: it reads what ``Orchestrator`` sets)."""

    s: OrchestratorSettings
    state: ClusterState
    publisher: Publisher
    _starting: asyncio.Lock

    if TYPE_CHECKING:  # provided by Orchestrator and OrchestratorViews

        def _known(self, cluster: str) -> bool: ...
        def _node_names(self, cluster: str) -> list[str]: ...
        def _require_leader(self) -> None: ...
        def is_leader(self) -> bool: ...

    # -- the decisions' side --------------------------------------------------------------

    def paused_why(self, cluster: str, now: datetime | None = None) -> str:
        """Why automatic decisions are off for ``cluster`` ('' when they are on)."""
        m = self.state.cluster(cluster).paused(now or datetime.now(UTC))
        return f"{cluster} is {describe_pause(m)}" if m is not None else ""

    async def expire_pauses(self) -> list[str]:
        """A ``ClusterResumed`` ("pause expired") for each pause whose ``until`` passed (it
        counts as resumed already: ``ClusterRecord.paused``; this says so in the record)."""
        said = []
        now = datetime.now(UTC)
        for name, rec in list(self.state.clusters.items()):
            if rec.maintenance is None or rec.paused(now) is not None:
                continue
            event = ClusterResumed(
                cluster=name,
                node=self.s.instance,
                epoch=rec.epoch,
                payload=ClusterResumedPayload(by=EXPIRY_ACTOR, reason=PAUSE_EXPIRED),
            )
            await self.publisher.later(event)
            self.state.apply(event)  # folded now: said once
            said.append(f"{name}: {PAUSE_EXPIRED}: automatic decisions apply again")
        return said

    # -- the operator's side --------------------------------------------------------------

    def _cluster(self, cluster: str) -> ClusterRecord:
        if not self._known(cluster):
            raise NotFoundError(f"no cluster {cluster!r}")
        return self.state.cluster(cluster)

    async def _store(self, event: Event, what: str) -> None:
        await self.publisher.stored(event, keep_going=self.is_leader, what=what)
        self.state.apply(event)  # the answer (and the next request) sees it

    async def pause(
        self, cluster: str, actor: str, reason: str, until: datetime | None
    ) -> PauseAnswer:
        async with self._starting, lost_is_conflict():
            self._require_leader()
            rec = self._cluster(cluster)
            now = datetime.now(UTC)
            current = rec.paused(now)
            if current is not None:
                raise ConflictError(f"{cluster} is already {describe_pause(current)}")
            if until is not None and until <= now:
                raise ConflictError(f"the pause would end before it starts ({until.isoformat()})")
            event = ClusterPaused(
                cluster=cluster,
                node=self.s.instance,
                epoch=rec.epoch,
                payload=ClusterPausedPayload(by=actor, reason=reason, until=until),
            )
            await self._store(event, f"ClusterPaused of {cluster}")
            m = rec.paused(datetime.now(UTC))
            log.info("%s paused by %s until %s: %s", cluster, actor, until or "resumed", reason)
            return PauseAnswer(
                cluster=cluster,
                maintenance=m,
                message=(f"{cluster} is {describe_pause(m)}" if m else f"{cluster}: pause recorded")
                + "; no automatic failover or switchover (an operator's stay allowed)",
            )

    async def resume_cluster(self, cluster: str, actor: str, reason: str) -> PauseAnswer:
        async with self._starting, lost_is_conflict():
            self._require_leader()
            rec = self._cluster(cluster)
            if rec.paused(datetime.now(UTC)) is None:
                raise ConflictError(f"{cluster} is not paused")
            event = ClusterResumed(
                cluster=cluster,
                node=self.s.instance,
                epoch=rec.epoch,
                payload=ClusterResumedPayload(by=actor, reason=reason),
            )
            await self._store(event, f"ClusterResumed of {cluster}")
            log.info("%s resumed by %s: %s", cluster, actor, reason)
            return PauseAnswer(
                cluster=cluster, message=f"{cluster} resumed: automatic decisions apply again"
            )

    async def set_standby(
        self, cluster: str, node: str, standby: bool, actor: str, reason: str
    ) -> StandbyAnswer:
        async with self._starting, lost_is_conflict():
            self._require_leader()
            rec = self._cluster(cluster)
            if node not in self._node_names(cluster):
                raise NotFoundError(f"cluster {cluster} has no node {node!r}")
            n = rec.node(node)
            if standby and n.standby:
                raise ConflictError(f"{node} is already in standby: {n.standby_reason}")
            if not standby and not n.standby:
                raise ConflictError(f"{node} is not in standby")
            event = NodeStandbyChanged(
                cluster=cluster,
                node=self.s.instance,
                epoch=rec.epoch,
                payload=NodeStandbyChangedPayload(
                    target=node, standby=standby, by=actor, reason=reason
                ),
            )
            await self._store(event, f"NodeStandbyChanged of {cluster}/{node}")
            log.info("%s/%s standby=%s by %s: %s", cluster, node, standby, actor, reason)
            if not standby:
                return StandbyAnswer(
                    cluster=cluster,
                    node=node,
                    standby=False,
                    message=f"{node} may be chosen as target again",
                )
            return StandbyAnswer(
                cluster=cluster,
                node=node,
                standby=True,
                reason=reason,
                message=f"{node} is in standby: never chosen as the target of a switchover or "
                "failover",
                note=self._none_left(cluster, rec),
            )

    def _none_left(self, cluster: str, rec: ClusterRecord) -> str:
        others = [n for n in self._node_names(cluster) if n != rec.active]
        if any(not rec.node(n).standby for n in others):
            return ""
        return (
            f"no node of {cluster} can now take over from {rec.active or 'its Active'}: every "
            "switchover and failover is refused until a node is out of standby (unstandby)"
        )
