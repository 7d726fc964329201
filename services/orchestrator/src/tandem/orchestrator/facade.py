"""What the REST API (and so the CLI) may ask of the orchestrator. The API module depends on
this protocol only; the orchestrator service implements it."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

from tandem.events.catalog.vocabulary import Identity
from tandem.orchestrator.views import (
    ActionPreview,
    ClusterView,
    EventView,
    GroupView,
    LagHistoryView,
    SagaView,
)

if TYPE_CHECKING:
    from tandem.orchestrator.cluster_pages import ClusterPage, ClusterQuery
    from tandem.orchestrator.dns_reconcile import DnsReconcileAccepted
    from tandem.orchestrator.live_feed import LiveFeed
    from tandem.orchestrator.telemetry import Telemetry


T = TypeVar("T")


class NotFoundError(LookupError):
    """No such cluster, node, group or saga (HTTP 404)."""


class ConflictError(RuntimeError):
    """The request cannot be carried out in the current state (HTTP 409): a saga already
    runs, the target is out of sync or isolated, nothing to confirm, this replica is not
    the leader..."""


class InvalidQueryError(ValueError):
    """A query the state cannot answer as asked (HTTP 422): e.g. a filter on a group that is
    not configured. ``field`` names the query parameter."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class OrchestratorFacade(Protocol):
    async def cluster_page(
        self, query: ClusterQuery, keep: Callable[[ClusterView], T]
    ) -> ClusterPage[T]:
        """``keep`` of each view ``query`` selects (``cluster_pages.page_of``), built without
        holding the loop; ``InvalidQueryError`` for a filter that cannot be answered."""
        ...

    def cluster(self, name: str) -> ClusterView: ...

    async def groups(self) -> list[GroupView]:
        """Every group with its members' status (built a chunk at a time)."""
        ...

    def saga(self, saga_id: str) -> SagaView: ...

    async def events(self, cluster: str | None, after: int, limit: int) -> list[EventView]: ...

    async def switchover(self, cluster: str, to: str | None, actor: str, reason: str) -> str:
        """Start a managed switchover; returns the saga id."""
        ...

    async def failover(self, cluster: str, to: str | None, actor: str, reason: str) -> str:
        """An operator confirms (managed) or forces a failover; returns the saga id."""
        ...

    def lag_history(self, cluster: str, minutes: float) -> LagHistoryView:
        """Each target's replication lag over the last ``minutes`` (at most an hour)."""
        ...

    def switchover_preview(self, cluster: str, to: str | None) -> ActionPreview:
        """What ``switchover`` would do now (allowed or why not, target, steps); starts nothing."""
        ...

    def failover_preview(self, cluster: str, to: str | None) -> ActionPreview:
        """What an operator's ``failover`` would do now; starts nothing."""
        ...

    async def group_switchover(self, group: str, actor: str, reason: str) -> str: ...

    async def group_switchover_to(
        self, group: str, to: Identity, actor: str, reason: str
    ) -> tuple[str, dict[str, str]]:
        """A directed group switchover: every member to its node of identity ``to``; returns
        the saga id and the members skipped (already Active there), each with why."""
        ...

    async def dns_reconcile(
        self, cluster: str | None, actor: str, reason: str
    ) -> DnsReconcileAccepted:
        """Ask the dns_updater to check the DR names of ``cluster`` (None: all) now."""
        ...

    async def record_operator_action(
        self, actor: str, action: str, arguments: dict[str, object], outcome: str, source: str
    ) -> None: ...

    async def telemetry(self) -> Telemetry:
        """For ``/metrics``: the sagas, open alerts and queue depths (optional: a facade
        without it shows none)."""
        ...

    def is_leader(self) -> bool: ...

    def live_feed(self) -> LiveFeed:
        """The events as this replica folds them (``GET /api/v1/stream``)."""
        ...
