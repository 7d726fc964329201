"""The four remediations, each in three steps: plan (look at the VM, pick the target), start
(the vSphere call) and wait (poll the task until it ends or the timeout passes).

- ``restart_guest``: ``RebootGuest`` through VMware Tools; when Tools are not running
  (``guest.toolsRunningStatus``) or refuse, ``ResetVM_Task`` instead (the detail says so).
- ``reset``: ``ResetVM_Task``.
- ``vmotion``: ``RelocateVM_Task`` to the named host or to the one ``choose_host`` picks,
  with the resource pool of the target's cluster (the VM's own pool within its cluster).
- ``storage_vmotion``: ``RelocateVM_Task`` to the named datastore or to the one
  ``choose_datastore`` picks.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from pyVmomi import vim, vmodl

from tandem.events.catalog.vmware import VmRemediationRequestedPayload
from tandem.events.catalog.vocabulary import VmAction
from tandem.vmware_bridge.config import VCenterConfig, VmRef
from tandem.vmware_bridge.connection import Session, VCenter, describe_fault
from tandem.vmware_bridge.inventory import (
    DatastoreSpace,
    HostLoad,
    NoChoice,
    NotFound,
    bind,
    choose_datastore,
    choose_host,
    cluster_hosts,
    find_datastore,
    find_host,
    find_vm,
    host_datastores,
    host_loads,
    moid,
    retrieve,
    vm_facts,
)

log = logging.getLogger(__name__)

TOOLS_RUNNING = "guestToolsRunning"


class RemediationError(Exception):
    """The remediation cannot go on; ``str()`` is the reason for the Failed event."""

    def __init__(self, reason: str, task: str | None = None) -> None:
        super().__init__(reason)
        self.task = task


@dataclass(frozen=True)
class Plan:
    action: VmAction
    vm: str
    vm_name: str
    #: Where the VM goes (vMotion: a host; Storage vMotion: a datastore), as MoRef and name.
    target: str | None = None
    target_name: str | None = None
    pool: str | None = None
    tools_running: bool = False
    detail: str = ""


@dataclass(frozen=True)
class Started:
    task: str | None
    detail: str


@dataclass(frozen=True)
class Outcome:
    task: str | None
    detail: str


class Remediator:
    def __init__(self, vcenter: VCenter, config: VCenterConfig) -> None:
        self.vcenter = vcenter
        self.config = config

    async def resolve(self, ref: VmRef) -> tuple[str, str]:
        """(MoRef, name) of the VM ``ref`` identifies; NotFound if none."""

        def find(s: Session) -> tuple[str, str]:
            vm = find_vm(s, ref)
            m = moid(vm)
            return m, retrieve(s, [vm], ["name"])[m].get("name", m)

        return await self.vcenter.call(find)

    async def plan(self, vm: str, request: VmRemediationRequestedPayload) -> Plan:
        def decide(s: Session) -> Plan:
            try:
                return _plan(s, vm, request)
            except (NotFound, NoChoice) as exc:
                raise RemediationError(str(exc)) from None

        return await self.vcenter.call(decide)

    async def start(self, plan: Plan) -> Started:
        return await self.vcenter.call(lambda s: _start(s, plan))

    async def wait(self, plan: Plan, started: Started) -> Outcome:
        if started.task is None:  # RebootGuest: vCenter passed it to the guest, no task
            return Outcome(None, f"{plan.vm_name}: guest OS restart handed to VMware Tools")
        task = started.task
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.task_timeout_s
        while True:
            info = await self.vcenter.call(lambda s: _task_info(s, task))
            if info.state == vim.TaskInfo.State.success:
                done = await self.vcenter.call(lambda s: _done(s, plan))
                if plan.action is VmAction.RESTART_GUEST:  # the fallback: say why
                    done = f"{done} ({started.detail})"
                return Outcome(task, done)
            if info.state == vim.TaskInfo.State.error:
                why = describe_fault(info.error) if info.error is not None else "no reason given"
                what = info.descriptionId or "task"  # e.g. VirtualMachine.reset
                raise RemediationError(f"{what} {task} failed: {why}", task)
            if loop.time() >= deadline:
                progress = f", {info.progress}% done" if info.progress is not None else ""
                raise RemediationError(
                    f"task {task} did not finish within {self.config.task_timeout_s:g} s "
                    f"(still {info.state}{progress}); it may still finish in vCenter",
                    task,
                )
            await asyncio.sleep(self.config.task_poll_s)


# -- the blocking steps (worker thread) ---------------------------------------------------


def _plan(s: Session, vm: str, request: VmRemediationRequestedPayload) -> Plan:
    facts = vm_facts(s, vm)
    action = request.action
    base = Plan(action, vm, facts.name)
    if action in (VmAction.RESTART_GUEST, VmAction.RESET):
        if facts.power_state != "poweredOn":
            raise RemediationError(
                f"{facts.name} is {facts.power_state or 'in no known power state'}: "
                f"cannot {action.value.replace('_', ' ')} it"
            )
        tools = facts.tools_running == TOOLS_RUNNING
        if action is VmAction.RESET:
            detail = f"resetting {facts.name}"
        elif tools:
            detail = f"restarting the guest OS of {facts.name} through VMware Tools"
        else:
            detail = (
                f"VMware Tools are not running in {facts.name} "
                f"(toolsRunningStatus {facts.tools_running or 'unknown'}): "
                "resetting the VM instead of restarting its guest OS"
            )
        return Plan(action, vm, facts.name, tools_running=tools, detail=detail)
    if facts.host is None:
        raise RemediationError(f"{facts.name} runs on no host (is it registered?)")
    if action is VmAction.VMOTION:
        return _plan_vmotion(s, base, facts.host, facts.host_name, facts.pool, request)
    return _plan_storage(s, base, facts.host, facts.datastores, facts.committed_bytes, request)


def _plan_vmotion(
    s: Session,
    base: Plan,
    current: str,
    current_name: str | None,
    vm_pool: str | None,
    request: VmRemediationRequestedPayload,
) -> Plan:
    compute, compute_name, members, root_pool = cluster_hosts(s, current)
    if request.target_host:
        host = host_loads(s, [moid(find_host(s, request.target_host))])[0]
        if host.moid == current:
            raise RemediationError(f"{base.vm_name} already runs on host {host.name}")
        why = host.unfit()
        if why is not None:
            raise RemediationError(f"host {host.name} cannot take {base.vm_name}: {why}")
        chosen: HostLoad = host
        reason = "named in the request"
    else:
        loads = host_loads(s, members)
        chosen = choose_host(loads, current)
        others = "; ".join(
            f"{h.name} ({h.unfit()})" if h.unfit() else h.describe()
            for h in loads
            if h.moid not in (chosen.moid, current)
        )
        reason = (
            f"the host of {compute_name} with the most free CPU + memory "
            f"({chosen.describe()}{'; others: ' + others if others else ''})"
        )
    if chosen.compute == compute:
        pool = vm_pool or root_pool
    else:
        pool = cluster_hosts(s, chosen.moid)[3]
    return Plan(
        base.action,
        base.vm,
        base.vm_name,
        target=chosen.moid,
        target_name=chosen.name,
        pool=pool,
        detail=(
            f"moving {base.vm_name} from host {current_name or current} to host "
            f"{chosen.name}: {reason}"
        ),
    )


def _plan_storage(
    s: Session,
    base: Plan,
    host: str,
    current: tuple[str, ...],
    needed: int,
    request: VmRemediationRequestedPayload,
) -> Plan:
    spaces = host_datastores(s, host)
    names = {d.moid: d.name for d in spaces}
    on = ", ".join(names.get(d, d) for d in current) or "no datastore"
    if request.target_datastore:
        wanted = moid(find_datastore(s, request.target_datastore))
        match = [d for d in spaces if d.moid == wanted]
        if not match:
            raise RemediationError(
                f"datastore {request.target_datastore} is not mounted on the host of {base.vm_name}"
            )
        chosen: DatastoreSpace = match[0]
        if chosen.moid in current:
            raise RemediationError(f"{base.vm_name} is already on datastore {chosen.name}")
        why = chosen.unfit(needed)
        if why is not None:
            raise RemediationError(f"datastore {chosen.name} cannot take {base.vm_name}: {why}")
        reason = "named in the request"
    else:
        chosen = choose_datastore(spaces, current, needed)
        reason = f"the datastore of its host with the most free space ({chosen.describe()})"
    return Plan(
        base.action,
        base.vm,
        base.vm_name,
        target=chosen.moid,
        target_name=chosen.name,
        detail=f"moving the storage of {base.vm_name} from {on} to {chosen.name}: {reason}",
    )


def _start(s: Session, plan: Plan) -> Started:
    vm = bind(s, vim.VirtualMachine, plan.vm)
    if plan.action is VmAction.RESTART_GUEST and plan.tools_running:
        try:
            vm.RebootGuest()
            return Started(None, plan.detail)
        except (vim.fault.ToolsUnavailable, vim.fault.InvalidState) as exc:
            fallback = (
                f"VMware Tools could not restart the guest OS of {plan.vm_name} "
                f"({describe_fault(exc)}): resetting the VM instead"
            )
            log.warning("%s", fallback)
            return _task(vm.Reset(), fallback)
    if plan.action in (VmAction.RESTART_GUEST, VmAction.RESET):
        return _task(vm.Reset(), plan.detail)
    if plan.action is VmAction.VMOTION:
        assert plan.target is not None
        spec = vim.vm.RelocateSpec(
            host=bind(s, vim.HostSystem, plan.target),
            pool=bind(s, vim.ResourcePool, plan.pool) if plan.pool else None,
        )
    else:
        assert plan.target is not None
        spec = vim.vm.RelocateSpec(datastore=bind(s, vim.Datastore, plan.target))
    return _task(vm.Relocate(spec, vim.VirtualMachine.MovePriority.defaultPriority), plan.detail)


def _task(task: vim.Task, detail: str) -> Started:
    return Started(moid(task), detail)


def _task_info(s: Session, task: str) -> vim.TaskInfo:
    try:
        info: vim.TaskInfo = bind(s, vim.Task, task).info
    except vmodl.fault.ManagedObjectNotFound:
        raise RemediationError(f"task {task} is gone from vCenter before it ended", task) from None
    return info


def _done(s: Session, plan: Plan) -> str:
    """What the VM looks like now (vMotion: its host; Storage vMotion: its datastores)."""
    facts = vm_facts(s, plan.vm)
    if plan.action is VmAction.VMOTION:
        return f"{facts.name} now runs on host {facts.host_name or facts.host}"
    if plan.action is VmAction.STORAGE_VMOTION:
        spaces = {d.moid: d.name for d in host_datastores(s, facts.host)} if facts.host else {}
        on = ", ".join(spaces.get(d, d) for d in facts.datastores)
        return f"{facts.name} now stored on {on}"
    return f"{facts.name} reset; it is {facts.power_state}"
