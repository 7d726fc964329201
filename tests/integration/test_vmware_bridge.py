"""The VMware bridge against govmomi's vCenter simulator (see ``vcsim_rig``), over a real bus.

The service runs in-process (``run(settings, bus)``); each test asks for a remediation with
a ``VmRemediationRequested`` event and reads the answer from the stream. What the tests
expect of a choice (host, datastore) they compute themselves from the inventory. Simulator
limits: tasks end at once; ``RebootGuest`` and Tools running exist only for DC0_H0_VM0
(our ``-tools-running``); Storage vMotion moves ``vm.datastore`` but not the VM's files;
a clone lands on the source's host whatever the RelocateSpec says.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pyVim.connect import Disconnect
from pyVmomi import vim
from typer.testing import CliRunner

from helpers import eventually
from tandem.cli.vmware import vmware_app
from tandem.events.bus import Bus
from tandem.events.catalog import (
    ApplicationRestartRequested,
    VmRemediationCompleted,
    VmRemediationFailed,
    VmRemediationRequested,
    VmRemediationStarted,
)
from tandem.events.catalog.vmware import VmRemediationRequestedPayload
from tandem.events.catalog.vocabulary import VmAction
from tandem.events.envelope import Event, utcnow
from tandem.events.registry import decode_event
from tandem.events.subjects import EVENTS_STREAM
from tandem.vmware_bridge.config import load_config
from tandem.vmware_bridge.connection import VCenter, VCenterError
from tandem.vmware_bridge.remediation import Plan, RemediationError, Remediator, Started
from tandem.vmware_bridge.service import run
from tandem.vmware_bridge.settings import VmwareBridgeSettings
from vcsim_rig import (  # the fixtures vcsim_binary and vcsim
    TOOLS_VM,
    Vcsim,
    running_vcsim,
    vcsim_binary_fixture,  # noqa: F401
    vcsim_fixture,  # noqa: F401
    write_credentials,
)

CLUSTER_VM = "DC0_C0_RP0_VM0"
OTHER_CLUSTER_VM = "DC0_C0_RP0_VM1"
NO_TOOLS_VM = "DC0_H0_VM1"
OUTCOMES = (VmRemediationCompleted, VmRemediationFailed)


# -- helpers ----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def bridge(bus: Bus, config: Path | None, **kw: Any) -> AsyncIterator[asyncio.Task[None]]:
    settings = VmwareBridgeSettings(config=config, **kw)
    task = asyncio.create_task(run(settings, bus))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def ask(bus: Bus, vm: str, action: VmAction, **kw: Any) -> VmRemediationRequested:
    occurred_at = kw.pop("occurred_at", None)
    request = VmRemediationRequested(
        cluster="demo",
        node="primary",
        epoch=3,
        payload=VmRemediationRequestedPayload(vm=vm, action=action, reason="test", **kw),
        **({"occurred_at": occurred_at} if occurred_at else {}),
    )
    await bus.publish(request)
    return request


async def events(bus: Bus) -> list[Event]:
    info = await bus.js.stream_info(EVENTS_STREAM)
    if info.state.messages == 0:
        return []
    out = []
    for seq in range(info.state.first_seq, info.state.last_seq + 1):
        out.append(decode_event((await bus.js.get_msg(EVENTS_STREAM, seq)).data))
    return out


async def caused_by(bus: Bus, request: Event) -> list[Event]:
    return [e for e in await events(bus) if e.causation_id == request.id]


async def outcome(bus: Bus, request: Event, timeout: float = 45.0) -> Event:
    """The Completed or Failed event answering ``request``."""
    found: list[Event] = []

    async def answered() -> bool:
        found[:] = [e for e in await caused_by(bus, request) if isinstance(e, OUTCOMES)]
        return bool(found)

    await eventually(answered, timeout=timeout, what=f"an answer to {request.payload}")
    assert len(found) == 1, found
    return found[0]


def completed(event: Event) -> VmRemediationCompleted:
    assert isinstance(event, VmRemediationCompleted), event.payload
    return event


def failed(event: Event) -> VmRemediationFailed:
    assert isinstance(event, VmRemediationFailed), event.payload
    return event


@contextlib.contextmanager
def inventory(sim: Vcsim) -> Any:
    si = sim.connect()
    try:
        yield si.RetrieveContent()
    finally:
        Disconnect(si)


def all_of(content: Any, kind: Any) -> list[Any]:
    view = content.viewManager.CreateContainerView(content.rootFolder, [kind], True)
    try:
        return list(view.view)
    finally:
        view.Destroy()


def vm_named(content: Any, name: str) -> Any:
    found = [v for v in all_of(content, vim.VirtualMachine) if v.name == name]
    assert len(found) == 1, f"{len(found)} VMs named {name}"
    return found[0]


def fit_hosts_by_free_resources(vm: Any) -> list[Any]:
    """The rule, written again: other connected, non-maintenance hosts of the VM's cluster,
    by free CPU share + free memory share (highest first; equal: by name)."""
    current = vm.runtime.host
    ranked = []
    for h in current.parent.host:
        if h == current or h.runtime.connectionState != "connected":
            continue
        if h.runtime.inMaintenanceMode:
            continue
        hw, qs = h.summary.hardware, h.summary.quickStats
        cpu = 1 - qs.overallCpuUsage / (hw.cpuMhz * hw.numCpuCores)
        mem = 1 - qs.overallMemoryUsage / (hw.memorySize / 2**20)
        ranked.append((-(cpu + mem), h.name, h))
    return [h for *_, h in sorted(ranked, key=lambda r: (r[0], r[1]))]


# -- remediations -----------------------------------------------------------------------------


async def test_guest_restart_goes_through_vmware_tools(
    bus: Bus, vcsim: Vcsim, tmp_path: Path
) -> None:
    with inventory(vcsim) as content:
        vm = vm_named(content, TOOLS_VM)
        assert vm.guest.toolsRunningStatus == "guestToolsRunning"
        booted = vm.summary.runtime.bootTime
    async with bridge(bus, vcsim.write_config(tmp_path)):
        request = await ask(bus, TOOLS_VM, VmAction.RESTART_GUEST)
        done = completed(await outcome(bus, request))
    assert done.payload.task is None  # RebootGuest is no task
    assert "VMware Tools" in done.payload.detail
    assert (done.cluster, done.node, done.epoch) == ("demo", "primary", 3)
    started = [e for e in await caused_by(bus, request) if isinstance(e, VmRemediationStarted)]
    assert len(started) == 1 and "through VMware Tools" in started[0].payload.detail
    with inventory(vcsim) as content:
        assert vm_named(content, TOOLS_VM).summary.runtime.bootTime > booted


async def test_guest_restart_without_tools_falls_back_to_a_reset(
    bus: Bus, vcsim: Vcsim, tmp_path: Path
) -> None:
    with inventory(vcsim) as content:
        vm = vm_named(content, NO_TOOLS_VM)
        assert vm.guest.toolsRunningStatus == "guestToolsNotRunning"  # what vcsim reports
        booted = vm.summary.runtime.bootTime
    async with bridge(bus, vcsim.write_config(tmp_path)):
        request = await ask(bus, NO_TOOLS_VM, VmAction.RESTART_GUEST)
        done = completed(await outcome(bus, request))
    assert done.payload.task is not None and done.payload.task.startswith("task-")
    assert "VMware Tools are not running" in done.payload.detail
    assert "resetting the VM instead" in done.payload.detail
    with inventory(vcsim) as content:
        vm = vm_named(content, NO_TOOLS_VM)
        assert vm.summary.runtime.bootTime > booted
        assert vm.runtime.powerState == "poweredOn"


async def test_reset_completes(bus: Bus, vcsim: Vcsim, tmp_path: Path) -> None:
    with inventory(vcsim) as content:
        vm = vm_named(content, CLUSTER_VM)
        booted, uuid = vm.summary.runtime.bootTime, vm.config.instanceUuid
    config = vcsim.write_config(tmp_path, vms={"demo": {"primary": uuid}})
    async with bridge(bus, config):
        request = await ask(bus, "primary", VmAction.RESET)  # the node, mapped to the UUID
        done = completed(await outcome(bus, request))
    assert done.payload.task is not None
    assert done.payload.detail == f"{CLUSTER_VM} reset; it is poweredOn"
    kinds = [type(e) for e in await caused_by(bus, request)]
    assert kinds == [VmRemediationStarted, VmRemediationCompleted]
    with inventory(vcsim) as content:
        assert vm_named(content, CLUSTER_VM).summary.runtime.bootTime > booted


async def test_vmotion_to_a_named_host(bus: Bus, vcsim: Vcsim, tmp_path: Path) -> None:
    with inventory(vcsim) as content:
        vm = vm_named(content, CLUSTER_VM)
        others = [h for h in vm.runtime.host.parent.host if h != vm.runtime.host]
        target, target_moref = max((h.name, h._moId) for h in others)
        moref = vm._moId
    async with bridge(bus, vcsim.write_config(tmp_path)):
        request = await ask(bus, moref, VmAction.VMOTION, target_host=target)
        done = completed(await outcome(bus, request))
        assert done.payload.target == target
        again = await ask(bus, moref, VmAction.VMOTION, target_host=target_moref)
        assert f"already runs on host {target}" in failed(await outcome(bus, again)).payload.detail
    with inventory(vcsim) as content:
        assert vm_named(content, CLUSTER_VM).runtime.host.name == target


async def test_vmotion_picks_the_fit_host_with_most_free_cpu_and_memory(
    bus: Bus, vcsim: Vcsim, tmp_path: Path
) -> None:
    with inventory(vcsim) as content:
        ranked = fit_hosts_by_free_resources(vm_named(content, CLUSTER_VM))
        assert len(ranked) >= 2
        # The best host goes into maintenance mode: the next one must be chosen.
        best, best_name = ranked[0], ranked[0].name
        best.EnterMaintenanceMode_Task(timeout=0)
        expected = fit_hosts_by_free_resources(vm_named(content, CLUSTER_VM))[0].name
        assert expected == ranked[1].name
        try:
            async with bridge(bus, vcsim.write_config(tmp_path)):
                request = await ask(bus, CLUSTER_VM, VmAction.VMOTION)
                done = completed(await outcome(bus, request))
        finally:
            best.ExitMaintenanceMode_Task(timeout=0)
        assert done.payload.target == expected
        assert vm_named(content, CLUSTER_VM).runtime.host.name == expected
    started = [e for e in await caused_by(bus, request) if isinstance(e, VmRemediationStarted)]
    assert f"to host {expected}: the host of DC0_C0 with the most free CPU + memory" in (
        started[0].payload.detail
    )
    assert f"{best_name} (in maintenance mode)" in started[0].payload.detail


async def test_storage_vmotion_to_a_named_and_to_the_roomiest_datastore(
    bus: Bus, vcsim: Vcsim, tmp_path: Path
) -> None:
    async with bridge(bus, vcsim.write_config(tmp_path)):
        with inventory(vcsim) as content:
            vm = vm_named(content, OTHER_CLUSTER_VM)
            current = {d.name for d in vm.datastore}
            named = sorted(d.name for d in vm.runtime.host.datastore if d.name not in current)[0]
        request = await ask(bus, OTHER_CLUSTER_VM, VmAction.STORAGE_VMOTION, target_datastore=named)
        assert completed(await outcome(bus, request)).payload.target == named
        with inventory(vcsim) as content:
            vm = vm_named(content, OTHER_CLUSTER_VM)
            assert [d.name for d in vm.datastore] == [named]
            # The rule, again: accessible datastores of its host, not its own, most free.
            candidates = [
                d for d in vm.runtime.host.datastore if d.summary.accessible and d.name != named
            ]
            expected = sorted(candidates, key=lambda d: (-d.summary.freeSpace, d.name))[0].name
        request = await ask(bus, OTHER_CLUSTER_VM, VmAction.STORAGE_VMOTION)
        done = completed(await outcome(bus, request))
    assert done.payload.target == expected
    started = [e for e in await caused_by(bus, request) if isinstance(e, VmRemediationStarted)]
    assert "most free space" in started[0].payload.detail
    with inventory(vcsim) as content:
        assert [d.name for d in vm_named(content, OTHER_CLUSTER_VM).datastore] == [expected]


# -- refusals and failures --------------------------------------------------------------------


async def test_a_wrong_password_fails_with_vcenters_reason_and_the_bridge_goes_on(
    bus: Bus, vcsim: Vcsim, tmp_path: Path
) -> None:
    config = vcsim.write_config(tmp_path, password="wrong")
    async with bridge(bus, config) as service:
        request = await ask(bus, NO_TOOLS_VM, VmAction.RESET)
        reason = failed(await outcome(bus, request)).payload.detail
        assert "refused the login of tandem" in reason
        assert "Login failure (InvalidLogin)" in reason  # vCenter's own words
        assert not service.done()
        # The same credentials are not tried again soon (vCenter would lock the account).
        request = await ask(bus, NO_TOOLS_VM, VmAction.RESET)
        reason = failed(await outcome(bus, request)).payload.detail
        assert "Login failure (InvalidLogin) (not tried again: the credentials file is " in reason
        # The credentials file is read at each login: fixed, the next request succeeds.
        write_credentials(tmp_path / "vcenter-credentials.toml")
        request = await ask(bus, NO_TOOLS_VM, VmAction.RESET)
        completed(await outcome(bus, request))
        assert not service.done()


async def test_an_unknown_vm_fails_with_the_reason(bus: Bus, vcsim: Vcsim, tmp_path: Path) -> None:
    config = vcsim.write_config(tmp_path, vms={"demo": {"primary": "vm-99999"}})
    async with bridge(bus, config):
        cases = {
            "no-such-vm": "no VM named 'no-such-vm' in vCenter",
            "primary": "no VM with MoRef 'vm-99999' (the VM of demo/primary) in vCenter",
            "00000000-0000-0000-0000-000000000000": "no VM with instance UUID",
            "demo/ghost": "demo/ghost: no such node in the [vms] map",
        }
        requests = {vm: await ask(bus, vm, VmAction.RESET) for vm in cases}
        for vm, why in cases.items():
            reason = failed(await outcome(bus, requests[vm])).payload.detail
            assert why in reason, reason


async def test_a_second_request_for_a_busy_vm_is_refused(
    bus: Bus, vcsim_binary: Path, tmp_path: Path
) -> None:
    # vCenter answers ResetVM_Task only after 3 s here: the first reset is still running
    # when the second request (published right after it) is handled.
    with running_vcsim(vcsim_binary, ("-delay", "ResetVM_Task=3000")) as sim:
        async with bridge(bus, sim.write_config(tmp_path)):
            first = await ask(bus, NO_TOOLS_VM, VmAction.RESET)
            second = await ask(bus, NO_TOOLS_VM, VmAction.VMOTION)
            other = await ask(bus, CLUSTER_VM, VmAction.RESET)  # another VM is not held up
            reason = failed(await outcome(bus, second)).payload.detail
            assert reason.startswith(
                "a remediation is already running for this VM (action reset since "
            )
            completed(await outcome(bus, first))
            completed(await outcome(bus, other))
            # Once it ended, the VM takes requests again.
            third = await ask(bus, NO_TOOLS_VM, VmAction.RESET)
            completed(await outcome(bus, third))


async def test_restart_application_is_requested_after_the_remediation(
    bus: Bus, vcsim: Vcsim, tmp_path: Path
) -> None:
    async with bridge(bus, vcsim.write_config(tmp_path)):
        request = await ask(bus, NO_TOOLS_VM, VmAction.RESET, restart_application="demoapp")
        completed(await outcome(bus, request))

        async def asked() -> bool:
            return any(
                isinstance(e, ApplicationRestartRequested) for e in await caused_by(bus, request)
            )

        await eventually(asked, what="ApplicationRestartRequested")
    kinds = [type(e) for e in await caused_by(bus, request)]
    assert kinds == [VmRemediationStarted, VmRemediationCompleted, ApplicationRestartRequested]
    restart = (await caused_by(bus, request))[-1]
    assert isinstance(restart, ApplicationRestartRequested)
    assert (restart.cluster, restart.node) == ("demo", "primary")
    assert restart.payload.application == "demoapp"


async def test_old_requests_and_no_config_are_answered_with_a_failure(
    bus: Bus, vcsim: Vcsim, tmp_path: Path
) -> None:
    async with bridge(bus, vcsim.write_config(tmp_path)):
        old = await ask(bus, NO_TOOLS_VM, VmAction.RESET, occurred_at=utcnow() - timedelta(hours=1))
        assert (
            "not carried out: requested 3600 s ago"
            in failed(await outcome(bus, old)).payload.detail
        )
    async with bridge(bus, None):
        request = await ask(bus, NO_TOOLS_VM, VmAction.RESET)
        assert "no vCenter is configured" in failed(await outcome(bus, request)).payload.detail


async def test_a_powered_off_vm_and_a_failed_task_are_reported(
    bus: Bus, vcsim: Vcsim, tmp_path: Path
) -> None:
    config_path = vcsim.write_config(tmp_path)
    config = load_config(config_path)
    vc = VCenter(config.vcenter)
    with inventory(vcsim) as content:
        vm = vm_named(content, NO_TOOLS_VM)
        vm.PowerOffVM_Task()
        try:
            async with bridge(bus, config_path):
                request = await ask(bus, NO_TOOLS_VM, VmAction.RESET)
                reason = failed(await outcome(bus, request)).payload.detail
            assert reason == f"{NO_TOOLS_VM} is poweredOff: cannot reset it"
            # A task that ends in error: powering off what is off already.
            task = vm.PowerOffVM_Task()._moId
            remediator = Remediator(vc, config.vcenter)
            with pytest.raises(RemediationError) as info:
                await remediator.wait(
                    Plan(VmAction.RESET, vm._moId, NO_TOOLS_VM), Started(task, "")
                )
        finally:
            vm.PowerOnVM_Task()
            vc.close()
    assert info.value.task == task
    assert f"VirtualMachine.powerOff {task} failed: " in str(info.value)
    assert "InvalidPowerState" in str(info.value)


def test_tls_verification_needs_the_ca_of_vcenter(vcsim: Vcsim, tmp_path: Path) -> None:
    strict = load_config(vcsim.write_config(tmp_path / "strict", verify_tls=True))
    vc = VCenter(strict.vcenter)
    with pytest.raises(VCenterError) as info:
        vc.run(lambda s: s.si.CurrentTime())
    assert f"vCenter {vcsim.host}:{vcsim.port}: its TLS certificate is not trusted" in str(
        info.value
    )
    assert "vcenter.ca_file" in str(info.value)
    trusted = vcsim.write_config(tmp_path / "ca", verify_tls=True, ca_file=vcsim.ca_file)
    vc = VCenter(load_config(trusted).vcenter)
    try:
        vc.run(lambda s: s.si.CurrentTime())
        assert vc.logins == 1
    finally:
        vc.close()


async def test_an_expired_session_is_opened_again(vcsim: Vcsim, tmp_path: Path) -> None:
    config = load_config(vcsim.write_config(tmp_path))
    vc = VCenter(config.vcenter)
    try:
        first = vc.run(lambda s: s.si.CurrentTime())
        # vCenter ends the session (as an idle timeout would); the next call logs in again.
        vc.run(lambda s: s.content.sessionManager.Logout())
        assert vc.run(lambda s: s.si.CurrentTime()) >= first
        assert vc.logins == 2
    finally:
        vc.close()


# -- clone-secondary ----------------------------------------------------------------------------


def test_clone_secondary_creates_the_vm(vcsim: Vcsim, tmp_path: Path) -> None:
    config = vcsim.write_config(tmp_path, vms={"demo": {"primary": OTHER_CLUSTER_VM}})
    with inventory(vcsim) as content:
        source = vm_named(content, OTHER_CLUSTER_VM)
        host = sorted(h.name for h in source.runtime.host.parent.host)[0]
        store = sorted(d.name for d in source.runtime.host.datastore)[-1]
    args = ["clone-secondary", "--vm", "demo/primary", "--name", "demo-secondary"]
    result = CliRunner().invoke(
        vmware_app, [*args, "--host", host, "--datastore", store, "--config", str(config)]
    )
    assert result.exit_code == 0, result.output
    assert "done (vm-" in result.stdout
    with inventory(vcsim) as content:
        clone = vm_named(content, "demo-secondary")
        assert [d.name for d in clone.datastore] == [store]
        assert clone.parent == vm_named(content, OTHER_CLUSTER_VM).parent  # same folder
        assert clone.runtime.powerState == "poweredOff"
    # Again: the name is taken now; refused, with one line.
    again = CliRunner().invoke(vmware_app, [*args, "--config", str(config)])
    assert again.exit_code == 2
    assert again.stderr.strip().splitlines() == [
        f"not cloned: a VM named 'demo-secondary' already exists ({clone._moId})"
    ]


def test_clone_secondary_refusals(vcsim: Vcsim, tmp_path: Path) -> None:
    config = vcsim.write_config(tmp_path)
    runner = CliRunner()
    unknown = runner.invoke(
        vmware_app, ["clone-secondary", "--vm", "nope", "--name", "x", "--config", str(config)]
    )
    assert (unknown.exit_code, unknown.stderr.strip()) == (2, "not cloned: no VM named 'nope'")
    args = ["clone-secondary", "--vm", CLUSTER_VM, "--name", "x", "--host", "H9"]
    bad_host = runner.invoke(vmware_app, [*args, "--config", str(config)])
    assert (bad_host.exit_code, bad_host.stderr.strip()) == (
        2,
        "not cloned: no host named 'H9'",
    )
    wrong = vcsim.write_config(tmp_path / "wrong", password="wrong")
    login = runner.invoke(
        vmware_app, ["clone-secondary", "--vm", CLUSTER_VM, "--name", "x", "--config", str(wrong)]
    )
    assert login.exit_code == 3
    assert "refused the login of tandem: Login failure" in login.stderr
    assert len(login.stderr.strip().splitlines()) == 1


def test_the_simulator_restarts_with_a_clean_model(vcsim: Vcsim) -> None:
    with inventory(vcsim) as content:
        host = next(h for h in all_of(content, vim.HostSystem) if h.name == "DC0_C0_H0")
        host.EnterMaintenanceMode_Task(timeout=0)
        assert host.runtime.inMaintenanceMode
    port = vcsim.port
    vcsim.restart()
    assert vcsim.port == port
    with inventory(vcsim) as content:
        host = next(h for h in all_of(content, vim.HostSystem) if h.name == "DC0_C0_H0")
        assert not host.runtime.inMaintenanceMode
        assert "demo-secondary" not in {v.name for v in all_of(content, vim.VirtualMachine)}
