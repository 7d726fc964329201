"""The failover's fence step by the ``vmware`` method: the orchestrator's fencer asks on the
bus (``VmFenceRequested``), the VMware bridge (in-process, against govmomi's vCenter
simulator, see ``vcsim_rig``) powers the old Active's VM off and answers; the step completes
only once the VM is off, and a VM that cannot be fenced fails the step."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

from pyVim.connect import Disconnect
from pyVmomi import vim

from fencing_rig import failover_rig
from helpers import running
from tandem.events.bus import Bus
from tandem.events.catalog.vocabulary import Severity
from tandem.orchestrator.settings import FencingConfig
from tandem.vmware_bridge.service import run
from tandem.vmware_bridge.settings import VmwareBridgeSettings
from vcsim_rig import (  # the fixtures vcsim_binary and vcsim
    Vcsim,
    vcsim_binary_fixture,  # noqa: F401
    vcsim_fixture,  # noqa: F401
)

AFTER_FENCE = ["ApplyReceiveQueue", "Expose", "StartIntercepting", "StartApplications"]


@contextlib.asynccontextmanager
async def bridge(bus: Bus, config: Path) -> AsyncIterator[None]:
    async with running(run(VmwareBridgeSettings(config=config), bus)):
        yield


@contextlib.contextmanager
def vm_named(sim: Vcsim, name: str) -> Iterator[Any]:
    si = sim.connect()
    try:
        content = si.RetrieveContent()
        view = content.viewManager.CreateContainerView(
            content.rootFolder, [vim.VirtualMachine], True
        )
        try:
            [vm] = [v for v in view.view if v.name == name]
        finally:
            view.Destroy()
        yield vm
    finally:
        Disconnect(si)


def power_state(sim: Vcsim, name: str) -> str:
    with vm_named(sim, name) as vm:
        return str(vm.runtime.powerState)


def vmware(cluster: str, vm: str | None = None) -> list[FencingConfig]:
    return [FencingConfig(cluster=cluster, node="primary", method="vmware", vm=vm)]


async def test_the_old_actives_vm_is_powered_off_before_the_step_completes(
    bus: Bus, vcsim: Vcsim, tmp_path: Path
) -> None:
    vm = "DC0_C0_RP0_VM0"
    assert power_state(vcsim, vm) == "poweredOn"
    async with (
        bridge(bus, vcsim.write_config(tmp_path)),
        failover_rig(bus, "vm-fence", vmware("vm-fence", vm)) as rig,
    ):
        reason = await rig.runner.execute(rig.saga(step_timeout_s=30))
        assert reason == "failover of vm-fence to secondary completed"
        [done] = rig.fence_step("SagaStepCompleted")
        why = done.payload.result["reason"]  # type: ignore[attr-defined]
        assert why.startswith(f"VM {vm} (vm-")
        assert why.endswith(f"of primary: {vm} powered off (was poweredOn) (VMware bridge)")
        [request] = rig.events.of("VmFenceRequested")
        assert (request.node, request.epoch, request.correlation_id) == (
            "primary",
            2,
            "saga-vm-fence",
        )
        [fenced] = rig.events.of("VmFenced")
        assert fenced.causation_id == request.id and fenced.payload.task  # type: ignore[attr-defined]
        # The bridge says VmFenced once it saw the VM off; the step completes only after.
        assert rig.events.events.index(fenced) < rig.events.events.index(done)
        assert rig.received == AFTER_FENCE
    assert power_state(vcsim, vm) == "poweredOff"


async def test_a_vm_already_off_is_fenced_and_the_bridges_map_names_it(
    bus: Bus, vcsim: Vcsim, tmp_path: Path
) -> None:
    vm = "DC0_C0_RP0_VM1"
    with vm_named(vcsim, vm) as found:
        found.PowerOffVM_Task()
    config = vcsim.write_config(tmp_path, vms={"vm-off": {"primary": vm}})
    async with bridge(bus, config), failover_rig(bus, "vm-off", vmware("vm-off")) as rig:
        reason = await rig.runner.execute(rig.saga(step_timeout_s=30))
        assert reason == "failover of vm-off to secondary completed"
        [request] = rig.events.of("VmFenceRequested")
        assert request.payload.vm is None  # type: ignore[attr-defined]
        [fenced] = rig.events.of("VmFenced")
        assert fenced.payload.task is None  # type: ignore[attr-defined]
        assert fenced.payload.detail == f"{vm} is already powered off"  # type: ignore[attr-defined]
        assert rig.received == AFTER_FENCE


async def test_an_unknown_vm_fails_the_step_with_the_bridges_reason(
    bus: Bus, vcsim: Vcsim, tmp_path: Path
) -> None:
    async with (
        bridge(bus, vcsim.write_config(tmp_path)),
        failover_rig(bus, "vm-unknown", vmware("vm-unknown", "no-such-vm")) as rig,
    ):
        reason = await rig.runner.execute(rig.saga(step_timeout_s=30))
        assert reason.startswith("step 1 (fence old Active) failed after the role changed: ")
        [failed] = rig.fence_step("SagaStepFailed")
        why = failed.payload.reason  # type: ignore[attr-defined]
        assert "by vmware failed: the VMware bridge did not power off no-such-vm: " in why
        assert "no VM named 'no-such-vm'" in why
        [alert] = rig.alerts()
        assert alert.payload.severity is Severity.CRITICAL  # type: ignore[attr-defined]
        assert rig.received == []  # not exposed
        assert rig.events.of("VmFenceFailed")


async def test_no_bridge_answering_fails_the_step_within_its_timeout(bus: Bus) -> None:
    table = [FencingConfig(cluster="vm-nobody", node="primary", method="vmware", timeout_s=1)]
    async with failover_rig(bus, "vm-nobody", table) as rig:
        reason = await rig.runner.execute(rig.saga(step_timeout_s=30))
        assert "fence old Active" in reason
        [failed] = rig.fence_step("SagaStepFailed")
        assert "the VMware bridge did not answer within 1s about the VM of primary" in (
            failed.payload.reason  # type: ignore[attr-defined]
        )
        assert rig.received == []
