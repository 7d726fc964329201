"""Finding VMs, hosts and datastores, and choosing where a VM should go.

Everything here is blocking pyVmomi work, run by ``VCenter.call`` in a worker thread, and
takes the ``Session`` it is called with: objects are bound to that session by MoRef, so a
call repeated after a new login uses the new session.

The choices, when a request names no target:

- vMotion: among the hosts of the VM's cluster (its compute resource) other than the one it
  runs on, those connected, powered on and not in maintenance mode; the one with the most
  free CPU + memory, where free CPU = 1 - ``summary.quickStats.overallCpuUsage`` /
  (``summary.hardware.cpuMhz`` x ``numCpuCores``) and free memory = 1 -
  ``overallMemoryUsage`` (MB) / (``summary.hardware.memorySize`` in MB), each between 0
  and 1; their sum ranks the hosts (equal sums: by host name). A host without quick stats
  counts as fully used.
- Storage vMotion: among the datastores mounted on the VM's host other than those it uses,
  those accessible, not in maintenance mode and with more free space than the VM's
  committed storage; the one with the most ``summary.freeSpace`` (equal: by name).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from pyVmomi import vim, vmodl
from pyVmomi.VmomiSupport import ManagedObject

from tandem.vmware_bridge.config import VmRef
from tandem.vmware_bridge.connection import Session

MO = TypeVar("MO", bound=ManagedObject)
GIB = 1 << 30
MIB = 1 << 20

_PC = vmodl.query.PropertyCollector


class NotFound(LookupError):
    """What was asked for is not in the inventory; the message says what."""


class NoChoice(LookupError):
    """No host or datastore qualifies as a target; the message says why each was left out."""


def bind(session: Session, cls: type[MO], moid: str) -> MO:
    """The managed object ``cls`` ``moid`` on this session's connection."""
    return cls(moid, session.si._GetStub())


def moid(obj: ManagedObject) -> str:
    return str(obj._GetMoId())


def retrieve(
    session: Session, objs: Sequence[ManagedObject], props: list[str]
) -> dict[str, dict[str, Any]]:
    """``props`` of each of ``objs`` (all of one type) in one PropertyCollector call:
    MoRef -> {property path: value}; unset properties are absent."""
    if not objs:
        return {}
    spec = _PC.FilterSpec(
        objectSet=[_PC.ObjectSpec(obj=o) for o in objs],
        propSet=[_PC.PropertySpec(type=type(objs[0]), pathSet=props)],
    )
    return _collect(session, spec)


def _collect(session: Session, spec: vmodl.query.PropertyCollector.FilterSpec) -> dict[str, Any]:
    pc = session.content.propertyCollector
    out: dict[str, dict[str, Any]] = {}
    result = pc.RetrievePropertiesEx([spec], _PC.RetrieveOptions())
    while result is not None:
        for oc in result.objects:
            out[moid(oc.obj)] = {p.name: p.val for p in oc.propSet} | {"_obj": oc.obj}
        result = pc.ContinueRetrievePropertiesEx(result.token) if result.token else None
    return out


def named(session: Session, kind: type[vim.ManagedEntity], name: str) -> list[Any]:
    """Every entity of ``kind`` named ``name`` (through a container view of the inventory)."""
    view_manager = session.content.viewManager
    assert view_manager is not None, "vCenter has no view manager"
    view = view_manager.CreateContainerView(session.content.rootFolder, [kind], True)
    try:
        spec = _PC.FilterSpec(
            objectSet=[
                _PC.ObjectSpec(
                    obj=view,
                    skip=True,
                    selectSet=[
                        _PC.TraversalSpec(
                            name="view", path="view", skip=False, type=vim.view.ContainerView
                        )
                    ],
                )
            ],
            propSet=[_PC.PropertySpec(type=kind, pathSet=["name"])],
        )
        found = _collect(session, spec)
    finally:
        view.Destroy()
    return [p["_obj"] for p in found.values() if p.get("name") == name]


def _exists(session: Session, obj: MO, what: str) -> MO:
    try:
        retrieve(session, [obj], ["name"])
    except vmodl.fault.ManagedObjectNotFound:
        raise NotFound(f"no {what}") from None
    return obj


def _one(found: list[Any], what: str, hint: str) -> Any:
    if not found:
        raise NotFound(f"no {what}")
    if len(found) > 1:
        refs = ", ".join(sorted(moid(f) for f in found))
        raise NotFound(f"{len(found)} objects match {what} ({refs}): {hint}")
    return found[0]


def find_vm(session: Session, ref: VmRef) -> vim.VirtualMachine:
    if ref.kind == "moref":
        return _exists(session, bind(session, vim.VirtualMachine, ref.value), str(ref))
    if ref.kind == "uuid":
        search = session.content.searchIndex
        assert search is not None, "vCenter has no search index"
        found = search.FindByUuid(None, ref.value, True, True)
        if not isinstance(found, vim.VirtualMachine):
            raise NotFound(f"no {ref}")
        return found
    vm: vim.VirtualMachine = _one(
        named(session, vim.VirtualMachine, ref.value),
        str(ref),
        "name the VM by its MoRef or instance UUID instead",
    )
    return vm


def find_host(session: Session, name: str) -> vim.HostSystem:
    host: vim.HostSystem = _by_name_or_moref(session, vim.HostSystem, "host", name)
    return host


def find_datastore(session: Session, name: str) -> vim.Datastore:
    ds: vim.Datastore = _by_name_or_moref(session, vim.Datastore, "datastore", name)
    return ds


def _by_name_or_moref(session: Session, kind: Any, word: str, name: str) -> Any:
    """``name`` is a MoRef ("host-12") or the object's name, which must be unique."""
    if re.fullmatch(rf"{word}-\d+", name):
        return _exists(session, bind(session, kind, name), f"{word} with MoRef {name}")
    return _one(named(session, kind, name), f"{word} named {name!r}", "use its MoRef")


# -- facts about a VM ---------------------------------------------------------------------


@dataclass(frozen=True)
class VmFacts:
    moid: str
    name: str
    power_state: str | None
    tools_running: str | None
    host: str | None
    host_name: str | None
    pool: str | None
    datastores: tuple[str, ...]
    committed_bytes: int


VM_PROPS = [
    "name",
    "runtime.powerState",
    "guest.toolsRunningStatus",
    "runtime.host",
    "resourcePool",
    "datastore",
    "summary.storage.committed",
]


def vm_facts(session: Session, vm_moid: str) -> VmFacts:
    vm = bind(session, vim.VirtualMachine, vm_moid)
    try:
        p = retrieve(session, [vm], VM_PROPS)[vm_moid]
    except (vmodl.fault.ManagedObjectNotFound, KeyError):
        raise NotFound(f"VM {vm_moid} is gone from the inventory") from None
    host = p.get("runtime.host")
    host_name = None
    if host is not None:
        host_name = retrieve(session, [host], ["name"]).get(moid(host), {}).get("name")
    pool = p.get("resourcePool")
    return VmFacts(
        moid=vm_moid,
        name=p.get("name", vm_moid),
        power_state=p.get("runtime.powerState"),
        tools_running=p.get("guest.toolsRunningStatus"),
        host=moid(host) if host is not None else None,
        host_name=host_name,
        pool=moid(pool) if pool is not None else None,
        datastores=tuple(moid(d) for d in p.get("datastore") or []),
        committed_bytes=int(p.get("summary.storage.committed") or 0),
    )


# -- hosts --------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostLoad:
    moid: str
    name: str
    connected: bool
    maintenance: bool
    powered_on: bool
    cpu_capacity_mhz: float
    cpu_used_mhz: float | None
    mem_capacity_mb: float
    mem_used_mb: float | None
    #: The host's compute resource (its cluster, or itself when standalone).
    compute: str | None = None

    @staticmethod
    def _free(used: float | None, capacity: float) -> float:
        if used is None or capacity <= 0:
            return 0.0
        return min(1.0, max(0.0, 1.0 - used / capacity))

    @property
    def free_cpu(self) -> float:
        return self._free(self.cpu_used_mhz, self.cpu_capacity_mhz)

    @property
    def free_memory(self) -> float:
        return self._free(self.mem_used_mb, self.mem_capacity_mb)

    @property
    def score(self) -> float:
        return self.free_cpu + self.free_memory

    def unfit(self) -> str | None:
        """Why the host cannot take a VM now, or None."""
        if not self.connected:
            return "not connected"
        if not self.powered_on:
            return "not powered on"
        if self.maintenance:
            return "in maintenance mode"
        return None

    def describe(self) -> str:
        return f"{self.name}: {self.free_cpu:.0%} CPU and {self.free_memory:.0%} memory free"


HOST_PROPS = [
    "name",
    "parent",
    "runtime.connectionState",
    "runtime.inMaintenanceMode",
    "runtime.powerState",
    "summary.hardware",
    "summary.quickStats",
]


def host_loads(session: Session, host_moids: Sequence[str]) -> list[HostLoad]:
    hosts = [bind(session, vim.HostSystem, h) for h in host_moids]
    out = []
    for m, p in retrieve(session, hosts, HOST_PROPS).items():
        hw = p.get("summary.hardware")
        qs = p.get("summary.quickStats")
        parent = p.get("parent")
        power = p.get("runtime.powerState")
        out.append(
            HostLoad(
                moid=m,
                name=p.get("name", m),
                connected=p.get("runtime.connectionState") == "connected",
                maintenance=bool(p.get("runtime.inMaintenanceMode")),
                powered_on=power in (None, "poweredOn"),
                cpu_capacity_mhz=float(hw.cpuMhz * hw.numCpuCores) if hw else 0.0,
                cpu_used_mhz=_num(getattr(qs, "overallCpuUsage", None)),
                mem_capacity_mb=float(hw.memorySize) / MIB if hw else 0.0,
                mem_used_mb=_num(getattr(qs, "overallMemoryUsage", None)),
                compute=moid(parent) if parent is not None else None,
            )
        )
    return sorted(out, key=lambda h: h.name)


def _num(value: Any) -> float | None:
    return float(value) if value is not None else None


class _Named(Protocol):
    @property
    def name(self) -> str: ...


Candidate = TypeVar("Candidate", bound=_Named)


def _most(
    candidates: Sequence[Candidate],
    unfit: Callable[[Candidate], str | None],
    measure: Callable[[Candidate], float],
    what: str,
    when_none: str,
) -> Candidate:
    """Of the candidates ``unfit`` has no objection to, the one with the highest ``measure``
    (equal: the first by name). ``NoChoice`` when none is fit: "no <what> to move the VM to:"
    and each one left out with the reason, or ``when_none`` when there were none at all."""
    fit, left_out = [], []
    for c in candidates:
        why = unfit(c)
        if why is None:
            fit.append(c)
        else:
            left_out.append(f"{c.name} ({why})")
    if not fit:
        others = "; ".join(left_out) or when_none
        raise NoChoice(f"no {what} to move the VM to: {others}")
    return min(fit, key=lambda c: (-measure(c), c.name))


def choose_host(loads: Sequence[HostLoad], current: str | None) -> HostLoad:
    """The fit host other than ``current`` with the highest free CPU + memory."""
    return _most(
        loads,
        lambda h: "the VM's current host" if h.moid == current else h.unfit(),
        lambda h: h.score,
        "host",
        "the cluster has no other host",
    )


def cluster_hosts(session: Session, host_moid: str) -> tuple[str, str, list[str], str | None]:
    """(compute resource MoRef, its name, its hosts' MoRefs, its root resource pool)."""
    host = bind(session, vim.HostSystem, host_moid)
    parent = retrieve(session, [host], ["parent"])[host_moid].get("parent")
    if not isinstance(parent, vim.ComputeResource):
        raise NotFound(f"host {host_moid} belongs to no cluster or compute resource")
    p = retrieve(session, [parent], ["name", "host", "resourcePool"])[moid(parent)]
    pool = p.get("resourcePool")
    return (
        moid(parent),
        p.get("name", moid(parent)),
        [moid(h) for h in p.get("host") or []],
        moid(pool) if pool is not None else None,
    )


# -- datastores ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DatastoreSpace:
    moid: str
    name: str
    accessible: bool
    maintenance: bool
    free_bytes: int
    capacity_bytes: int

    def unfit(self, needed_bytes: int) -> str | None:
        if not self.accessible:
            return "not accessible"
        if self.maintenance:
            return "in maintenance mode"
        if self.free_bytes <= needed_bytes:
            return f"{self.free_bytes / GIB:.1f} GiB free, the VM needs {needed_bytes / GIB:.1f}"
        return None

    def describe(self) -> str:
        return f"{self.name}: {self.free_bytes / GIB:.1f} GiB free"


DATASTORE_PROPS = [
    "name",
    "summary.accessible",
    "summary.maintenanceMode",
    "summary.freeSpace",
    "summary.capacity",
]


def host_datastores(session: Session, host_moid: str) -> list[DatastoreSpace]:
    """The datastores mounted on a host, with their space."""
    host = bind(session, vim.HostSystem, host_moid)
    mounted = retrieve(session, [host], ["datastore"])[host_moid].get("datastore") or []
    out = []
    for m, p in retrieve(session, list(mounted), DATASTORE_PROPS).items():
        out.append(
            DatastoreSpace(
                moid=m,
                name=p.get("name", m),
                accessible=bool(p.get("summary.accessible")),
                maintenance=p.get("summary.maintenanceMode") not in (None, "normal"),
                free_bytes=int(p.get("summary.freeSpace") or 0),
                capacity_bytes=int(p.get("summary.capacity") or 0),
            )
        )
    return sorted(out, key=lambda d: d.name)


def choose_datastore(
    spaces: Sequence[DatastoreSpace], current: Sequence[str], needed_bytes: int
) -> DatastoreSpace:
    """The fit datastore not in ``current`` with the most free space."""
    return _most(
        spaces,
        lambda d: "the VM is on it" if d.moid in current else d.unfit(needed_bytes),
        lambda d: d.free_bytes,
        "datastore",
        "its host has no other datastore",
    )
