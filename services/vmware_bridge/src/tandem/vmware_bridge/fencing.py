"""Fencing by power-off: ``VmFenceRequested`` (from the orchestrator's failover saga, before it
exposes the new Active) -> ``PowerOffVM_Task`` on the old Active's VM -> ``VmFenced`` or
``VmFenceFailed`` with the reason.

The VM is the request's ``vm`` (looked up as a remediation's is: a node of the cluster in the
``[vms]`` map, else a VM name, MoRef or instance UUID) or, when the request names none, the
VM of the request's node in the ``[vms]`` map (nothing else: a guess could power off the
wrong machine). Powering off is idempotent: a VM already off is fenced (no task), and so is
one whose power-off task failed because it went off meanwhile. A suspended VM is powered off
too (its memory image could be resumed). Each request is carried out in its own task, one
power-off per VM at a time; a request older than the time its requester waits
(``timeout_s``, at most ``request_max_age_s``) is refused: nobody waits for it any more, and
the node may be serving again by then.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from pyVmomi import vim, vmodl

from tandem.events.catalog import VmFenced, VmFenceFailed, VmFenceRequested
from tandem.events.catalog.fencing import VmFencedPayload, VmFenceFailedPayload
from tandem.events.envelope import Event, utcnow
from tandem.vmware_bridge.config import BridgeConfig, VmRef
from tandem.vmware_bridge.connection import Session, VCenter, VCenterError, describe_fault
from tandem.vmware_bridge.inventory import NotFound, bind, find_vm, moid, vm_facts
from tandem.vmware_bridge.settings import VmwareBridgeSettings

log = logging.getLogger(__name__)

REMEMBER_REQUESTS = 4096
OFF = "poweredOff"


class FenceError(Exception):
    """The VM is not known to be off; ``str()`` is the reason, ``task`` the vSphere task."""

    def __init__(self, reason: str, vm: str | None = None, task: str | None = None) -> None:
        super().__init__(reason)
        self.vm = vm
        self.task = task


@dataclass(frozen=True)
class Fenced:
    vm: str
    name: str
    task: str | None
    detail: str


class VmFencing:
    """Answers fence requests; ``emit`` queues an event for the bus (never blocks)."""

    def __init__(
        self,
        settings: VmwareBridgeSettings,
        config: BridgeConfig | None,
        vcenter: VCenter | None,
        emit: Callable[[Event], None],
    ) -> None:
        self.settings = settings
        self.config = config
        self.vcenter = vcenter
        self.emit = emit
        self._locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._seen: OrderedDict[str, None] = OrderedDict()

    async def handle(self, event: Event) -> None:
        if not isinstance(event, VmFenceRequested):
            return
        if event.id in self._seen:
            log.info("fence request %s seen before: not carried out again", event.id)
            return
        self._seen[event.id] = None
        while len(self._seen) > REMEMBER_REQUESTS:
            self._seen.popitem(last=False)
        task = asyncio.create_task(self._answer(event), name=f"fence-{event.node}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, request: VmFenceRequested) -> None:
        asked = request.payload.vm
        try:
            fenced = await self._fence(request)
        except FenceError as exc:
            self._failed(request, str(exc), exc.vm or asked, exc.task)
        except VCenterError as exc:
            self._failed(request, str(exc), asked)
        except vmodl.MethodFault as exc:
            self._failed(request, f"vCenter: {describe_fault(exc)}", asked)
        except asyncio.CancelledError:
            self._failed(request, "the VMware bridge stopped before the power-off ended", asked)
            raise
        except Exception as exc:
            log.exception("fencing %s/%s failed unexpectedly", request.cluster, request.node)
            self._failed(request, f"unexpected error: {type(exc).__name__}: {exc}", asked)
        else:
            log.info("%s/%s fenced: %s", request.cluster, request.node, fenced.detail)
            payload = VmFencedPayload(
                vm=fenced.vm, vm_name=fenced.name, task=fenced.task, detail=fenced.detail
            )
            self.emit(
                VmFenced(
                    cluster=request.cluster, node=request.node, epoch=request.epoch, payload=payload
                ).caused(request)
            )

    def _failed(
        self, request: VmFenceRequested, reason: str, vm: str | None, task: str | None = None
    ) -> None:
        log.warning("fencing %s/%s failed: %s", request.cluster, request.node, reason)
        payload = VmFenceFailedPayload(vm=vm, task=task, reason=reason)
        self.emit(
            VmFenceFailed(
                cluster=request.cluster, node=request.node, epoch=request.epoch, payload=payload
            ).caused(request)
        )

    def _ref(self, request: VmFenceRequested) -> VmRef:
        assert self.config is not None
        if request.payload.vm is not None:
            try:
                return self.config.vm_for(request.cluster, request.payload.vm)
            except LookupError as exc:
                raise FenceError(str(exc)) from None
        mapped = self.config.vms.get(request.cluster, {}).get(request.node)
        if mapped is None:
            raise FenceError(
                f"the request names no VM and {request.cluster}/{request.node} is not in the "
                "[vms] map of the bridge's config"
            )
        return VmRef.parse(mapped, node=f"{request.cluster}/{request.node}")

    async def _fence(self, request: VmFenceRequested) -> Fenced:
        p = request.payload
        age = (utcnow() - request.occurred_at).total_seconds()
        limit = min(p.timeout_s, self.settings.request_max_age_s)
        if age > limit:
            raise FenceError(
                f"not carried out: requested {age:.0f} s ago, and the requester waited only "
                f"{limit:g} s"
            )
        if self.config is None or self.vcenter is None:
            raise FenceError("no vCenter is configured (set TANDEM_VMWARE_BRIDGE_CONFIG to a file)")
        ref = self._ref(request)
        where = f"vCenter {self.config.vcenter.address}"
        try:
            vm = await asyncio.wait_for(
                self.vcenter.call(lambda s: moid(find_vm(s, ref))), self.settings.lookup_timeout_s
            )
        except NotFound as exc:
            raise FenceError(f"{exc} in {where}") from None
        except TimeoutError:
            raise FenceError(
                f"{where} did not answer within {self.settings.lookup_timeout_s:g} s "
                f"while looking for {ref}"
            ) from None
        lock = self._locks.setdefault(vm, asyncio.Lock())
        async with lock:  # one power-off per VM at a time; the second finds it off
            wait = min(self.config.vcenter.task_timeout_s, max(1.0, p.timeout_s - age))
            return await self._power_off(vm, wait)

    async def _power_off(self, vm: str, wait_s: float) -> Fenced:
        assert self.vcenter is not None and self.config is not None
        vcenter = self.vcenter
        facts = await vcenter.call(lambda s: vm_facts(s, vm))
        if facts.power_state == OFF:
            return Fenced(vm, facts.name, None, f"{facts.name} is already powered off")
        task = await vcenter.call(lambda s: moid(bind(s, vim.VirtualMachine, vm).PowerOffVM_Task()))
        log.info("powering off %s (%s, was %s): task %s", facts.name, vm, facts.power_state, task)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            info = await vcenter.call(lambda s: _task_info(s, task, vm))
            if info.state == vim.TaskInfo.State.success:
                break
            if info.state == vim.TaskInfo.State.error:
                now = await vcenter.call(lambda s: vm_facts(s, vm))
                if now.power_state == OFF:  # went off meanwhile (InvalidPowerState)
                    break
                why = describe_fault(info.error) if info.error is not None else "no reason given"
                raise FenceError(f"powering off {facts.name}: task {task} failed: {why}", vm, task)
            if loop.time() >= deadline:
                raise FenceError(
                    f"powering off {facts.name}: task {task} did not finish within "
                    f"{wait_s:g} s (still {info.state}); it may still finish in vCenter",
                    vm,
                    task,
                )
            await asyncio.sleep(self.config.vcenter.task_poll_s)
        after = await vcenter.call(lambda s: vm_facts(s, vm))
        if after.power_state != OFF:
            raise FenceError(
                f"{facts.name} is {after.power_state} after its power-off task {task} succeeded",
                vm,
                task,
            )
        return Fenced(vm, facts.name, task, f"{facts.name} powered off (was {facts.power_state})")

    async def stop(self) -> None:
        """Cancel the power-offs still running (each says so)."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _task_info(s: Session, task: str, vm: str) -> vim.TaskInfo:
    try:
        info: vim.TaskInfo = bind(s, vim.Task, task).info
    except vmodl.fault.ManagedObjectNotFound:
        raise FenceError(f"task {task} is gone from vCenter before it ended", vm, task) from None
    return info
