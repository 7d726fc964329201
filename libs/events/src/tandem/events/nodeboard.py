"""What the parts of one node agent tell each other in the same process.

The replicator, the monitor and the step executor of a node run in one agent process but
never import each other: they meet here. Each part writes what it knows (queue depths, the
role it plays, whether it fenced itself) and reads what the others wrote; the heartbeat
carries the union. Writes replace whole values, so no lock is needed on one event loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from tandem.events.catalog.vocabulary import HealthStatus, Role


@dataclass
class NodeBoard:
    role: Role | None = None
    epoch: int = 0
    #: The node hid itself because it could not renew its lease (until told otherwise).
    fenced: bool = False
    fenced_reason: str = ""
    fenced_since: datetime | None = None
    #: The epoch it fenced itself at: a role record at a later one means a saga moved it.
    fenced_epoch: int = 0
    #: A saga's step took the node's applications or identity down at this epoch: the node
    #: does not bring them back by itself (no unfence); the saga goes on or undoes it.
    steered_epoch: int = 0
    #: The epoch at which this node's replicator runs as the source with its capture started
    #: (0: not the source). A node resuming as Active waits for it before it serves.
    source_ready_epoch: int = 0
    #: The node serves or is about to: its node guard hides it if the lease is not renewed.
    guarded: bool = False
    #: Wall clock: when the guard hides the node unless the lease is renewed (None: unguarded).
    serve_until: float | None = None
    isolated: bool = False
    #: Applications an operator stopped (``tandem app stop``): their checks pause, no rule
    #: repairs them, until an operator's start.
    held_apps: frozenset[str] = frozenset()
    #: Bumped by ``tandem cleanup``: the health rules go back to their first rung.
    ladder_resets: int = 0
    checks: dict[str, HealthStatus] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)

    def set_gauges(self, **values: float) -> None:
        self.gauges = {**self.gauges, **values}

    def health(self) -> HealthStatus:
        """The worst status among the checks (UNKNOWN when there are none)."""
        if not self.checks:
            return HealthStatus.UNKNOWN
        order = [HealthStatus.OK, HealthStatus.UNKNOWN, HealthStatus.WARNING, HealthStatus.CRITICAL]
        return max(self.checks.values(), key=order.index)
