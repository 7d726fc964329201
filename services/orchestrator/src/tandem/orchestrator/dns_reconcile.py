"""An operator's DNS reconcile request (``POST /api/v1/dns/reconcile``): the orchestrator
publishes ``DnsReconcileRequested``, which the dns_updater answers with
``DnsReconcileCompleted`` (its correlation id is the request's id).

The orchestrator does not know the DR names (they are the dns_updater's configuration): it
checks the cluster is one it knows, that it is the leader (a follower refuses mutations),
and that the request is stored; the answer names the request and the stream position to
read the outcome from (``GET /api/v1/events?after=<seq>``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from tandem.events.bus import Bus
from tandem.events.catalog import DnsReconcileRequested
from tandem.events.catalog.dns_reconcile import DnsReconcileRequestedPayload
from tandem.events.names import SYSTEM_CLUSTER
from tandem.orchestrator.facade import NotFoundError
from tandem.orchestrator.settings import OrchestratorFile, OrchestratorSettings
from tandem.orchestrator.views import _View

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 5.0


class BusUnavailable(RuntimeError):
    """The request could not be stored (HTTP 503): the bus is away; nothing was asked."""


class DnsReconcileAccepted(_View):
    """A DNS reconcile request's answer (202)."""

    request_id: str
    #: The cluster asked for (None: every cluster).
    cluster: str | None = None
    #: The request's position in the event stream: the dns_updater's
    #: ``DnsReconcileCompleted`` (correlation id = ``request_id``) comes after it.
    seq: int
    events_url: str


class DnsReconcileRequests:
    """The orchestrator's part of a DNS reconcile (a mixin of ``Orchestrator``)."""

    bus: Bus
    s: OrchestratorSettings
    file: OrchestratorFile

    if TYPE_CHECKING:  # defined by Orchestrator and its read side

        def _require_leader(self) -> None: ...

        def _known(self, cluster: str) -> bool: ...

    async def dns_reconcile(
        self, cluster: str | None, actor: str, reason: str
    ) -> DnsReconcileAccepted:
        self._require_leader()
        groups = {g.name for g in self.file.groups}
        if cluster is not None and (not self._known(cluster) or cluster in groups):
            raise NotFoundError(f"no cluster {cluster!r}")
        event = DnsReconcileRequested(
            cluster=cluster or SYSTEM_CLUSTER,
            node=self.s.instance,
            payload=DnsReconcileRequestedPayload(
                cluster=cluster, requested_by=actor, reason=reason
            ),
        )
        try:
            ack = await self.bus.publish(event, timeout=PUBLISH_TIMEOUT_S)
        except Exception as exc:
            log.warning("DNS reconcile of %s not requested: %s", cluster or "every cluster", exc)
            raise BusUnavailable(
                f"the request could not be stored on the bus ({type(exc).__name__}: {exc}); "
                "try again"
            ) from None
        log.info(
            "DNS reconcile of %s requested by %s: %s (%s)",
            cluster or "every cluster",
            actor,
            reason,
            event.id,
        )
        return DnsReconcileAccepted(
            request_id=event.id,
            cluster=cluster,
            seq=ack.seq,
            events_url=f"/api/v1/events?after={ack.seq}",
        )
