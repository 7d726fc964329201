"""The failover's fence step by the ``guard`` method, on a real nats-server: the old Active's
lease (written here as its agent would) decides when the step completes; the new Active's
commands are recorded, so a failed fence is seen to expose nothing."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from fencing_rig import FailoverRig, failover_rig
from helpers import eventually, running
from tandem.events.bus import Bus
from tandem.events.catalog.vocabulary import Severity
from tandem.orchestrator.settings import FencingConfig

AFTER_FENCE = ["ApplyReceiveQueue", "Expose", "StartIntercepting", "StartApplications"]


@contextlib.asynccontextmanager
async def renewing(rig: FailoverRig, **lease: object) -> AsyncIterator[None]:
    """The old Active renews its lease every 0.2 s (it is alive, or came back) meanwhile."""

    async def renew() -> None:
        while True:
            await rig.write_lease(**lease)  # type: ignore[arg-type]
            await asyncio.sleep(0.2)

    async with running(renew()):
        yield


async def lease_seen(rig: FailoverRig) -> None:
    def seen() -> bool:
        entry = rig.liveness.seen.get((rig.cluster, "primary"))
        return entry is not None and entry.lease_revision is not None

    rig.liveness.watch(rig.cluster, "primary")
    await eventually(seen, 10, "the old Active's lease to be seen")


async def test_a_silent_lease_fences_after_its_ttl_and_the_allowance(bus: Bus) -> None:
    async with failover_rig(bus, "fence-silent") as rig:
        await rig.write_lease(ttl_s=1.0)
        written = time.monotonic()
        await lease_seen(rig)
        reason = await rig.runner.execute(rig.saga(step_timeout_s=10))
        assert reason == "failover of fence-silent to secondary completed"
        [done] = rig.fence_step("SagaStepCompleted")
        assert time.monotonic() - written >= 1.0 + 0.25
        why = done.payload.result["reason"]  # type: ignore[attr-defined]
        assert why.startswith("primary's lease silent for ")
        assert why.endswith("s (ttl 1s + 0.25s allowance): its guard has hidden it")
        assert rig.received == AFTER_FENCE
        steps = [e.payload.step for e in rig.events.of("SagaStepCompleted")]  # type: ignore[attr-defined]
        assert steps[:3] == ["change role", "fence old Active", "apply receive queue"]
        assert not rig.alerts()


async def test_renewals_keep_the_step_waiting_until_the_lease_says_passive_at_the_new_epoch(
    bus: Bus,
) -> None:
    async with failover_rig(bus, "fence-renewed") as rig:
        async with renewing(rig, role="active", epoch=1, ttl_s=1.0):
            await lease_seen(rig)
            saga = asyncio.create_task(rig.runner.execute(rig.saga(step_timeout_s=20)))
            await eventually(lambda: rig.fence_step("SagaStepStarted"), 10, "the fence step")
            await asyncio.sleep(3.0)  # well past ttl + allowance: the renewals hold it back
            assert not rig.fence_step("SagaStepCompleted")
            assert not rig.fence_step("SagaStepFailed")
            assert rig.received == []
        async with renewing(rig, role="passive", epoch=2, ttl_s=1.0):
            # It saw the new role record and hid itself; it goes on renewing, as passive.
            reason = await asyncio.wait_for(saga, 15)
        assert reason == "failover of fence-renewed to secondary completed"
        [done] = rig.fence_step("SagaStepCompleted")
        assert done.payload.result["reason"] == (  # type: ignore[attr-defined]
            "primary hid itself (lease: passive at epoch 2)"
        )
        assert rig.received == AFTER_FENCE
        assert not rig.alerts()


async def test_an_old_active_that_neither_goes_silent_nor_hides_fails_the_saga_unexposed(
    bus: Bus,
) -> None:
    async with failover_rig(bus, "fence-never") as rig, renewing(rig, role="active", epoch=1):
        await lease_seen(rig)
        started = time.monotonic()
        reason = await rig.runner.execute(rig.saga(step_timeout_s=2.0))
        took = time.monotonic() - started
        assert 2.0 <= took < 2.0 + 5  # one bounded wait: not retried like the other steps
        assert reason.startswith("step 1 (fence old Active) failed after the role changed: ")
        assert reason.endswith("; secondary was not exposed: it needs an operator")
        [failed] = rig.fence_step("SagaStepFailed")
        why = failed.payload.reason  # type: ignore[attr-defined]
        assert "fencing primary (the old Active of fence-never) by guard failed: " in why
        assert "its lease was renewed again" in why
        assert "did not hide itself at epoch 2 (lease: active at epoch 1)" in why
        assert rig.events.of("SagaFailed") and not rig.events.of("SagaCompleted")
        [alert] = rig.alerts()
        assert alert.payload.severity is Severity.CRITICAL  # type: ignore[attr-defined]
        assert "fencing primary" in alert.payload.message  # type: ignore[attr-defined]
        assert "by guard failed" in alert.payload.message  # type: ignore[attr-defined]
        assert not rig.alerts("saga.stuck")  # one alert for one problem
        assert rig.received == []  # nothing was exposed: no command reached the new Active


async def test_on_failure_expose_exposes_anyway_with_a_warning(bus: Bus) -> None:
    table = FencingConfig(cluster="fence-expose", on_failure="expose")
    async with (
        failover_rig(bus, "fence-expose", [table]) as rig,
        renewing(rig, role="active", epoch=1),
    ):
        await lease_seen(rig)
        reason = await rig.runner.execute(rig.saga(step_timeout_s=1.5))
        assert reason == "failover of fence-expose to secondary completed"
        [done] = rig.fence_step("SagaStepCompleted")
        why = done.payload.result["reason"]  # type: ignore[attr-defined]
        assert "by guard failed" in why
        assert why.endswith("the operator chose to expose anyway (on_failure = expose)")
        [alert] = rig.alerts()
        assert alert.payload.severity is Severity.WARNING  # type: ignore[attr-defined]
        assert "exposed anyway" in alert.payload.message  # type: ignore[attr-defined]
        assert rig.received == AFTER_FENCE
