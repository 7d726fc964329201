"""What the REST API (and so the CLI) may ask of the orchestrator. The API module depends on
this protocol only; the orchestrator service implements it."""

from __future__ import annotations

from typing import Protocol

from tandem.events.catalog.vocabulary import Identity
from tandem.orchestrator.views import ClusterView, EventView, GroupView, SagaView


class NotFoundError(LookupError):
    """No such cluster, node, group or saga (HTTP 404)."""


class ConflictError(RuntimeError):
    """The request cannot be carried out in the current state (HTTP 409): a saga already
    runs, the target is out of sync or isolated, nothing to confirm, this replica is not
    the leader..."""


class OrchestratorFacade(Protocol):
    def clusters(self) -> list[ClusterView]: ...

    def cluster(self, name: str) -> ClusterView: ...

    def groups(self) -> list[GroupView]: ...

    def saga(self, saga_id: str) -> SagaView: ...

    async def events(self, cluster: str | None, after: int, limit: int) -> list[EventView]: ...

    async def switchover(self, cluster: str, to: str | None, actor: str, reason: str) -> str:
        """Start a managed switchover; returns the saga id."""
        ...

    async def failover(self, cluster: str, to: str | None, actor: str, reason: str) -> str:
        """An operator confirms (managed) or forces a failover; returns the saga id."""
        ...

    async def group_switchover(self, group: str, actor: str, reason: str) -> str: ...

    async def group_switchover_to(
        self, group: str, to: Identity, actor: str, reason: str
    ) -> tuple[str, dict[str, str]]:
        """A directed group switchover: every member to its node of identity ``to``; returns
        the saga id and the members skipped (already Active there), each with why."""
        ...

    async def record_operator_action(
        self, actor: str, action: str, arguments: dict[str, object], outcome: str, source: str
    ) -> None: ...

    def is_leader(self) -> bool: ...
