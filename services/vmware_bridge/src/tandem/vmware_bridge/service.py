"""Assembly of the vmware_bridge service: ``run(settings, bus)``.

A durable consumer (``vmware_bridge``) reads ``VmRemediationRequested`` events. For each, the
bridge finds the VM in vCenter (the request's ``vm`` is a node of the config's ``[vms]`` map,
or a VM name, MoRef or instance UUID), refuses it if a remediation of that VM is running,
and otherwise carries it out in its own task, so that requests for other VMs go on
meanwhile: ``VmRemediationStarted`` when the vSphere call is made, then
``VmRemediationCompleted`` or ``VmRemediationFailed`` with the task's outcome, and, when
the request named ``restart_application``, ``ApplicationRestartRequested`` to the node.

Every request gets an answer: an unknown VM, vCenter unreachable or refusing the login, a
request older than ``request_max_age_s`` are each a ``VmRemediationFailed`` with the
reason; the bridge keeps running. A request is acknowledged once its remediation started:
if the bridge stops before the task ended, it says so in a ``VmRemediationFailed`` (the
vCenter task may still finish); a request is never carried out twice.

Outcome events belong to the request's cluster and node (the node whose VM it is), carry
the request's epoch and name the request as their cause.

A second durable consumer (``vmware_bridge_fencing``) reads ``VmFenceRequested`` (a
failover fencing the old Active): the VM is powered off (``fencing.py``) and the answer is
``VmFenced`` or ``VmFenceFailed``, by the same rules.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from pyVmomi import vmodl

from tandem.events.bus import Bus
from tandem.events.catalog import (
    ApplicationRestartRequested,
    VmRemediationCompleted,
    VmRemediationFailed,
    VmRemediationRequested,
    VmRemediationStarted,
)
from tandem.events.catalog.vmware import (
    ApplicationRestartRequestedPayload,
    VmRemediationProgressPayload,
)
from tandem.events.catalog.vocabulary import VmAction
from tandem.events.consumer import ConsumerOptions, DurableConsumer
from tandem.events.envelope import Event, utcnow
from tandem.events.outbox import Outbox
from tandem.events.runtime import ServiceSpec, service_lifetime
from tandem.events.subjects import events_filter
from tandem.vmware_bridge.config import BridgeConfig, load_config
from tandem.vmware_bridge.connection import VCenter, VCenterError, describe_fault
from tandem.vmware_bridge.fencing import VmFencing
from tandem.vmware_bridge.inventory import NotFound
from tandem.vmware_bridge.remediation import RemediationError, Remediator
from tandem.vmware_bridge.settings import VmwareBridgeSettings, load

log = logging.getLogger(__name__)

DURABLE = "vmware_bridge"
FENCING_DURABLE = "vmware_bridge_fencing"
REMEMBER_REQUESTS = 4096


@dataclass(frozen=True)
class Running:
    action: VmAction
    since: datetime
    request: str


class Bridge:
    """Answers remediation requests; ``emit`` queues an event for the bus (never blocks)."""

    def __init__(
        self,
        settings: VmwareBridgeSettings,
        config: BridgeConfig | None,
        emit: Callable[[Event], None],
    ) -> None:
        self.settings = settings
        self.config = config
        self.emit = emit
        self.vcenter = VCenter(config.vcenter) if config is not None else None
        self.remediator = (
            Remediator(self.vcenter, config.vcenter)
            if config is not None and self.vcenter is not None
            else None
        )
        #: VM MoRef -> the remediation running for it.
        self.running: dict[str, Running] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.fencing = VmFencing(settings, config, self.vcenter, emit)

    # -- events ----------------------------------------------------------------------------

    def _progress(
        self,
        cls: type[VmRemediationStarted | VmRemediationCompleted | VmRemediationFailed],
        request: VmRemediationRequested,
        detail: str,
        task: str | None = None,
        target: str | None = None,
    ) -> None:
        p = request.payload
        if cls is VmRemediationFailed:
            log.warning("%s %s of %s failed: %s", request.cluster, p.action, p.vm, detail)
        else:
            log.info("%s %s of %s: %s", request.cluster, p.action, p.vm, detail)
        payload = VmRemediationProgressPayload(
            vm=p.vm, action=p.action, task=task, detail=detail, target=target
        )
        self.emit(
            cls(
                cluster=request.cluster,
                node=request.node,
                epoch=request.epoch,
                payload=payload,
            ).caused(request)
        )

    def _failed(
        self, request: VmRemediationRequested, reason: str, task: str | None = None
    ) -> None:
        self._progress(VmRemediationFailed, request, reason, task)

    # -- requests ----------------------------------------------------------------------------

    async def handle(self, event: Event) -> None:
        if not isinstance(event, VmRemediationRequested):
            return
        if event.id in self._seen:
            log.info("request %s seen before: not carried out again", event.id)
            return
        self._seen[event.id] = None
        while len(self._seen) > REMEMBER_REQUESTS:
            self._seen.popitem(last=False)
        await self._accept(event)

    async def _accept(self, request: VmRemediationRequested) -> None:
        p = request.payload
        age = (utcnow() - request.occurred_at).total_seconds()
        if age > self.settings.request_max_age_s:
            self._failed(
                request,
                f"not carried out: requested {age:.0f} s ago, more than request_max_age_s "
                f"({self.settings.request_max_age_s:g} s)",
            )
            return
        if self.config is None or self.remediator is None:
            self._failed(
                request, "no vCenter is configured (set TANDEM_VMWARE_BRIDGE_CONFIG to a file)"
            )
            return
        where = f"vCenter {self.config.vcenter.address}"
        try:
            ref = self.config.vm_for(request.cluster, p.vm)
            vm, name = await asyncio.wait_for(
                self.remediator.resolve(ref), self.settings.lookup_timeout_s
            )
        except (LookupError, NotFound) as exc:
            self._failed(request, f"{exc} in {where}")
            return
        except VCenterError as exc:
            self._failed(request, str(exc))
            return
        except TimeoutError:
            self._failed(
                request,
                f"{where} did not answer within {self.settings.lookup_timeout_s:g} s "
                f"while looking for {ref}",
            )
            return
        except vmodl.MethodFault as exc:
            self._failed(request, f"{where}: looking for {ref}: {describe_fault(exc)}")
            return
        busy = self.running.get(vm)
        if busy is not None:
            self._failed(
                request,
                f"a remediation is already running for this VM (action {busy.action.value} "
                f"since {busy.since:%Y-%m-%dT%H:%M:%SZ})",
            )
            return
        self.running[vm] = Running(p.action, utcnow(), request.id)
        log.info("%s: %s of %s (%s) accepted", request.cluster, p.action, name, vm)
        task = asyncio.create_task(self._remediate(request, vm), name=f"remediate-{vm}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _remediate(self, request: VmRemediationRequested, vm: str) -> None:
        assert self.remediator is not None
        p = request.payload
        task: str | None = None
        try:
            plan = await self.remediator.plan(vm, p)
            started = await self.remediator.start(plan)
            task = started.task
            self._progress(VmRemediationStarted, request, started.detail, task, plan.target_name)
            outcome = await self.remediator.wait(plan, started)
            self._progress(
                VmRemediationCompleted, request, outcome.detail, outcome.task, plan.target_name
            )
            if p.restart_application:
                self._restart_application(request, p.restart_application, outcome.detail)
        except RemediationError as exc:
            self._failed(request, str(exc), exc.task or task)
        except VCenterError as exc:
            self._failed(request, str(exc), task)
        except vmodl.MethodFault as exc:
            self._failed(request, f"vCenter: {describe_fault(exc)}", task)
        except asyncio.CancelledError:
            self._failed(
                request,
                "the VMware bridge stopped before the remediation ended"
                + (f"; task {task} may still finish in vCenter" if task else ""),
                task,
            )
            raise
        except Exception as exc:
            log.exception("%s of %s failed unexpectedly", p.action, p.vm)
            self._failed(request, f"unexpected error: {type(exc).__name__}: {exc}", task)
        finally:
            self.running.pop(vm, None)

    def _restart_application(
        self, request: VmRemediationRequested, application: str, done: str
    ) -> None:
        p = request.payload
        self.emit(
            ApplicationRestartRequested(
                cluster=request.cluster,
                node=request.node,
                epoch=request.epoch,
                payload=ApplicationRestartRequestedPayload(
                    application=application,
                    reason=f"after VM remediation {p.action.value} of {p.vm}: {done}",
                    requested_by=DURABLE,
                ),
            ).caused(request)
        )

    async def stop(self) -> None:
        """Cancel the remediations and power-offs still running (each says so) and log out
        of vCenter."""
        await self.fencing.stop()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.vcenter is not None:
            await asyncio.to_thread(self.vcenter.close)


async def run(settings: VmwareBridgeSettings, bus: Bus) -> None:
    config = load_config(settings.config) if settings.config is not None else None
    outbox = Outbox(bus)
    bridge = Bridge(settings, config, outbox.put)
    consumer = DurableConsumer(
        bus,
        ConsumerOptions(
            durable=DURABLE, filter_subject=events_filter(event_type="VmRemediationRequested")
        ),
        bridge.handle,
    )
    fencing = DurableConsumer(
        bus,
        ConsumerOptions(
            durable=FENCING_DURABLE, filter_subject=events_filter(event_type="VmFenceRequested")
        ),
        bridge.fencing.handle,
    )
    async with (
        outbox.sending(),
        service_lifetime(bus, "vmware_bridge", node=settings.instance, outbox=outbox),
    ):
        if config is None:
            log.warning("no vCenter configured (TANDEM_VMWARE_BRIDGE_CONFIG): requests will fail")
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(consumer.run())
                tasks.create_task(fencing.run())
        finally:
            await bridge.stop()


SERVICE = ServiceSpec(name="vmware_bridge", load_settings=load, run=run)
