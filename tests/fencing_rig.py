"""A failover saga run in-process on a real bus, for the fence step's tests: the orchestrator's
``SagaRunner`` with its ``Fencer`` and ``Liveness``, the role record at epoch 1 naming the
old Active, the old Active's lease written by the test (``write_lease``: what its agent would
renew), and the new Active's commands answered (ok) and recorded by a ``CommandServer``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from agent_rig import EventRecorder
from tandem.events.bus import Bus
from tandem.events.envelope import Command, CommandResult, Event
from tandem.events.roles import RoleRecord
from tandem.events.rpc import CommandServer
from tandem.events.subjects import LEASES_BUCKET, ROLES_BUCKET, node_lease_key, role_key
from tandem.orchestrator.fencing import Fencer
from tandem.orchestrator.liveness import Liveness
from tandem.orchestrator.plans import FENCE, failover_plan
from tandem.orchestrator.runner import SagaRunner
from tandem.orchestrator.settings import FencingConfig, OrchestratorFile
from tandem.orchestrator.state_records import SagaRecord

OLD, NEW = "primary", "secondary"


@dataclass
class FailoverRig:
    bus: Bus
    cluster: str
    runner: SagaRunner
    liveness: Liveness
    events: EventRecorder
    #: The command types the new Active received, in order.
    received: list[str] = field(default_factory=list)

    async def write_lease(
        self, *, role: str = "active", epoch: int = 1, ttl_s: float = 1.0, node: str = OLD
    ) -> None:
        """One renewal of ``node``'s lease, as its agent writes it."""
        value = {
            "node": node,
            "ttl_s": ttl_s,
            "renewed_at": time.time(),
            "role": role,
            "epoch": epoch,
            "fenced": False,
        }
        kv = await self.bus.kv(LEASES_BUCKET)
        await kv.put(node_lease_key(self.cluster, node), json.dumps(value).encode())

    def saga(self, step_timeout_s: float) -> SagaRecord:
        return SagaRecord(
            id=f"saga-{self.cluster}",
            kind="failover",
            cluster=self.cluster,
            from_node=OLD,
            to_node=NEW,
            plan=failover_plan(OLD, NEW, 1, timeout_s=step_timeout_s),
            started_at=datetime.now(UTC),
        )

    def fence_step(self, type_: str) -> list[Event]:
        """The fence step's SagaStepStarted / Completed / Failed events."""
        return [e for e in self.events.of(type_) if e.payload.command == FENCE]  # type: ignore[attr-defined]

    def alerts(self, code: str = "fence.failed") -> list[Event]:
        return self.events.of("AlertRaised", code=code)


@contextlib.asynccontextmanager
async def failover_rig(
    bus: Bus, cluster: str, fencing: list[FencingConfig] | None = None
) -> AsyncIterator[FailoverRig]:
    roles = await bus.kv(ROLES_BUCKET)
    record = RoleRecord(active=OLD, epoch=1, reason="test: first Active")
    await roles.put(role_key(cluster), record.model_dump_json().encode())
    liveness = Liveness(bus, default_timeout_s=1.0, lease_poll_s=0.1)
    fencer = Fencer(bus, liveness, OrchestratorFile(fencing=fencing or []))
    runner = SagaRunner(
        bus, "orch-test", still_leader=lambda: True, retry_pause_s=0.1, fencer=fencer
    )
    events = await EventRecorder().start(bus, cluster)
    rig = FailoverRig(bus, cluster, runner, liveness, events)

    async def answer(command: Command) -> CommandResult:
        rig.received.append(command.type)
        return CommandResult(
            command_id=command.id,
            idempotency_key=command.idempotency_key,
            ok=True,
            reason=f"{command.type} done",
        )

    server = CommandServer(bus, cluster, NEW, answer, lambda: 0)
    await server.start()
    watching = asyncio.create_task(liveness.run())
    try:
        yield rig
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
        await server.stop()
        await events.stop()
