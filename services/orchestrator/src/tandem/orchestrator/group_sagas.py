"""Group sagas, for ``Orchestrator`` (a mixin): starting a group switchover (every member of
a group, in dependency order, optionally to the nodes of one identity) and carrying out its
steps, each a member's child switchover saga (or the move back when the group saga undoes),
resumed when a previous leader had started it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from tandem.events.catalog.sagas import SagaStepSpec
from tandem.events.catalog.vocabulary import Identity, SagaKind
from tandem.orchestrator.facade import ConflictError, NotFoundError
from tandem.orchestrator.groups import group_plan, member_order, member_target
from tandem.orchestrator.plans import switchover_plan
from tandem.orchestrator.publishing import LeadershipLost, lost_is_conflict
from tandem.orchestrator.settings import OrchestratorFile, OrchestratorSettings
from tandem.orchestrator.state import ClusterState
from tandem.orchestrator.state_records import ClusterRecord, SagaRecord
from tandem.orchestrator.steps import StepFailed

if TYPE_CHECKING:
    from tandem.orchestrator.runner import SagaRunner
    from tandem.orchestrator.views import NodeView

# The orchestrator's logger: these lines are core.py's, as they were before this module split off.
log = logging.getLogger("tandem.orchestrator.core")


class GroupSagas:
    """Group switchovers and their member steps (a mixin: it uses what ``Orchestrator`` sets)."""

    s: OrchestratorSettings
    file: OrchestratorFile
    state: ClusterState
    runner: SagaRunner
    _starting: asyncio.Lock

    if TYPE_CHECKING:  # provided by Orchestrator and OrchestratorViews

        def _node_names(self, cluster: str) -> list[str]: ...
        def _node_view(self, cluster: str, name: str) -> NodeView: ...
        def _require_leader(self) -> None: ...
        def is_leader(self) -> bool: ...
        def choose_target(self, cluster: str, exclude: str | None, to: str | None) -> str: ...
        async def begin(
            self,
            kind: SagaKind,
            cluster: ClusterRecord,
            old: str | None,
            new: str,
            plan: list[SagaStepSpec],
            reason: str,
            *,
            automatic: bool = False,
            cause: str | None = None,
            parent: str | None = None,
        ) -> SagaRecord: ...

    async def group_switchover(self, group: str, actor: str, reason: str) -> str:
        saga_id, _ = await self._group_switchover(group, None, actor, reason)
        return saga_id

    async def group_switchover_to(
        self, group: str, to: Identity, actor: str, reason: str
    ) -> tuple[str, dict[str, str]]:
        """Move every member to its node of identity ``to``; returns the saga id and the
        members already Active there (skipped), each with why."""
        return await self._group_switchover(group, to, actor, reason)

    async def _group_switchover(
        self, group: str, to: Identity | None, actor: str, reason: str
    ) -> tuple[str, dict[str, str]]:
        async with self._starting, lost_is_conflict():
            self._require_leader()
            config = next((g for g in self.file.groups if g.name == group), None)
            if config is None:
                raise NotFoundError(f"no group {group!r}")
            running = self.state.running_saga(group)
            if running is not None:
                raise ConflictError(f"a group saga ({running.id}) already runs on {group}")
            for member in config.members:
                rec = self.state.clusters.get(member.cluster)
                if rec is None or rec.active is None:
                    raise ConflictError(f"member {member.cluster} of {group} has no Active yet")
                busy = self.state.running_saga(member.cluster)
                if busy is not None:
                    raise ConflictError(f"a {busy.kind} saga already runs on {member.cluster}")
            skipped = self._already_there(group, member_order(config), to) if to else {}
            plan = group_plan(config, timeout_s=self.s.step_timeout_s * 10, to=to)
            saga = await self.begin(
                SagaKind.GROUP_SWITCHOVER,
                self.state.cluster(group),
                None,
                to or group,
                plan,
                f"{reason} (by {actor})",
            )
            for cluster, why in skipped.items():
                log.info("saga %s: %s is skipped: %s", saga.id, cluster, why)
            return saga.id, skipped

    def _node_of(self, cluster: str, identity: Identity) -> str | None:
        """The node of ``cluster`` with that identity (as last reported), or None."""
        for name in self._node_names(cluster):
            if self._node_view(cluster, name).identity == identity:
                return name
        return None

    def _already_there(self, group: str, members: list[str], to: Identity) -> dict[str, str]:
        """The members whose Active already has identity ``to``; ConflictError naming the
        members with no node of that identity."""
        missing, skipped = [], {}
        for cluster in members:
            node = self._node_of(cluster, to)
            if node is None:
                known = ", ".join(
                    f"{n} ({self._node_view(cluster, n).identity or 'identity unknown'})"
                    for n in self._node_names(cluster)
                )
                missing.append(f"{cluster} (nodes: {known or 'none'})")
            elif node == self.state.cluster(cluster).active:
                skipped[cluster] = f"already Active on {node} ({to})"
        if missing:
            raise ConflictError(
                f"cannot move group {group} to {to}: no {to} node in " + "; ".join(missing)
            )
        return skipped

    async def member_step(self, parent: SagaRecord, spec: SagaStepSpec, back: bool) -> str:
        """A group saga's step: move member ``spec.node`` by a child switchover saga (or
        move it back), resuming the child a previous leader had started."""
        cluster = spec.node
        children = [
            s for s in self.state.sagas.values() if s.parent == parent.id and s.cluster == cluster
        ]
        children.sort(key=lambda s: s.started_at)
        child = children[1 if back else 0] if len(children) > (1 if back else 0) else None
        if child is None:
            if back and not children:
                return f"{cluster}: nothing to undo (it was not moved)"
            async with self._starting:
                rec = self.state.cluster(cluster)
                if rec.active is None:
                    raise StepFailed(f"{cluster} has no Active")
                if back:
                    to = children[0].from_node
                else:
                    to, skip = self._member_destination(cluster, rec.active, spec)
                    if skip:
                        return f"{cluster}: skipped: {skip}"
                try:
                    target = self.choose_target(cluster, rec.active, to)
                except (ConflictError, NotFoundError) as exc:
                    raise StepFailed(str(exc)) from None
                plan = switchover_plan(
                    rec.active, target, rec.epoch, timeout_s=self.s.step_timeout_s
                )
                why = f"{'moving back' if back else 'member of'} group {parent.cluster}"
                child = await self.begin(
                    SagaKind.SWITCHOVER, rec, rec.active, target, plan, why, parent=parent.id
                )
        if child.state == "running":
            await self.runner.start(child)
            await self._ended(child.id, timeout=30)
        ended = self.state.sagas[child.id]
        if ended.state == "running" and not self.is_leader():
            raise LeadershipLost(f"saga {parent.id}: member {cluster} stopped with the leadership")
        if ended.state != "completed":
            raise StepFailed(f"{cluster}: {ended.reason or ended.state}")
        return f"{cluster}: {ended.reason}"

    def _member_destination(
        self, cluster: str, active: str, spec: SagaStepSpec
    ) -> tuple[str | None, str]:
        """Where a group saga's step moves ``cluster`` (None: the orchestrator's pick), and
        why it moves nothing ('' when it moves)."""
        try:
            identity = member_target(spec)
        except ValueError as exc:
            raise StepFailed(f"{cluster}: unreadable step {spec.name!r}: {exc}") from None
        if identity is None:
            return None, ""
        node = self._node_of(cluster, identity)
        if node is None:
            raise StepFailed(f"{cluster} has no {identity} node")
        if node == active:
            return node, f"already Active on {node} ({identity})"
        return node, ""

    async def _ended(self, saga_id: str, timeout: float) -> None:
        """Wait until the projection has folded the saga's end (its last event)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.state.sagas[saga_id].state == "running" and loop.time() < deadline:  # noqa: ASYNC110 - the projection folds from its own task
            await asyncio.sleep(0.05)
