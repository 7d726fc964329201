"""Cloning a VM into a new secondary (``tandem vmware clone-secondary``): ``CloneVM_Task``
into the source's folder, powered off, on the named host / datastore (default: the
source's), in the resource pool of the target host's cluster (the source's own pool when
it stays in its cluster). Blocking; run through ``VCenter.run``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyVmomi import vim

from tandem.vmware_bridge.config import VmRef
from tandem.vmware_bridge.connection import Session
from tandem.vmware_bridge.inventory import (
    NotFound,
    bind,
    cluster_hosts,
    find_datastore,
    find_host,
    find_vm,
    moid,
    named,
    retrieve,
)


@dataclass(frozen=True)
class ClonePlan:
    source: str
    source_name: str
    name: str
    folder: str
    pool: str | None
    host: str | None
    host_name: str | None
    datastore: str | None
    datastore_name: str | None

    def describe(self) -> str:
        where = [
            f"host {self.host_name}" if self.host_name else "the source's host",
            f"datastore {self.datastore_name}" if self.datastore_name else "its datastores",
        ]
        return f"clone {self.source_name} ({self.source}) to {self.name} on {' and '.join(where)}"


def plan_clone(
    s: Session, source: VmRef, name: str, host: str | None, datastore: str | None
) -> ClonePlan:
    """Check everything before cloning; NotFound names what is missing or in the way."""
    taken = named(s, vim.VirtualMachine, name)
    if taken:
        raise NotFound(f"a VM named {name!r} already exists ({moid(taken[0])})")
    vm = find_vm(s, source)
    src = moid(vm)
    p = retrieve(s, [vm], ["name", "parent", "resourcePool", "runtime.host"])[src]
    folder = p.get("parent")
    if folder is None:
        raise NotFound(f"{source} is in no folder (a vApp member?): cannot clone it beside")
    vm_pool = p.get("resourcePool")
    current = p.get("runtime.host")
    pool = moid(vm_pool) if vm_pool is not None else None
    host_moid = host_name = None
    if host is not None:
        target = find_host(s, host)
        host_moid = moid(target)
        host_name = retrieve(s, [target], ["name"])[host_moid].get("name", host_moid)
        compute, _, _, root_pool = cluster_hosts(s, host_moid)
        same = current is not None and cluster_hosts(s, moid(current))[0] == compute
        if not same or pool is None:
            pool = root_pool
    ds_moid = ds_name = None
    if datastore is not None:
        ds = find_datastore(s, datastore)
        ds_moid = moid(ds)
        ds_name = retrieve(s, [ds], ["name"])[ds_moid].get("name", ds_moid)
    return ClonePlan(
        source=src,
        source_name=p.get("name", src),
        name=name,
        folder=moid(folder),
        pool=pool,
        host=host_moid,
        host_name=host_name,
        datastore=ds_moid,
        datastore_name=ds_name,
    )


def start_clone(s: Session, plan: ClonePlan) -> str:
    """Start ``CloneVM_Task``; returns the task's MoRef."""
    location = vim.vm.RelocateSpec(
        host=bind(s, vim.HostSystem, plan.host) if plan.host else None,
        datastore=bind(s, vim.Datastore, plan.datastore) if plan.datastore else None,
        pool=bind(s, vim.ResourcePool, plan.pool) if plan.pool else None,
    )
    spec = vim.vm.CloneSpec(location=location, powerOn=False, template=False)
    vm = bind(s, vim.VirtualMachine, plan.source)
    return moid(vm.Clone(bind(s, vim.Folder, plan.folder), plan.name, spec))


def task_info(s: Session, task: str) -> vim.TaskInfo:
    info: vim.TaskInfo = bind(s, vim.Task, task).info
    return info
