"""Fencing the old Active: the failover saga's step between the pivot and the first expose.

After the role change the old Active is fenced off by the epoch for everything that checks
epochs, but not for clients: if it still holds the public identity, exposing the new one
makes two Actives on the wire. So before anything is exposed, the orchestrator makes sure
the old one has stopped serving, by the method the ``[[fencing]]`` tables of its config
file give for that node (the node's own table, else its cluster's, else ``guard``):

- ``guard``: the node's guard (a separate process on the node) hides it once its "may serve
  until" deadline passes, and that deadline is never later than the start of the node's
  last acknowledged lease renewal + the lease ttl. So the node is fenced once its lease in
  ``tandem_leases`` has not changed revision for ttl + ``clock_allowance_s`` (as
  ``Liveness`` sees it: from the delivery of the revision by the bucket's watch to the time
  up to which the watch is known to have delivered every write; a renewal seen meanwhile
  starts the count again), or once its lease says it
  plays passive at the new epoch or later (its agent writes that only after it hid).
- ``command``: an operator's fence command on this host (``{cluster}`` and ``{node}``
  replaced in each argument); exit 0 = fenced. A failed run is tried again while the
  step's deadline allows; one that outlives ``timeout_s`` is killed (its process group).
- ``vmware``: ``VmFenceRequested`` on the bus; the VMware bridge powers the VM off and
  answers ``VmFenced`` or ``VmFenceFailed``.

When fencing fails within the step's deadline, ``fence.failed`` is raised and the step
fails (the new Active stays hidden for an operator), unless the table says
``on_failure = "expose"``: then the step completes saying so, with the alert as a warning.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import DeliverPolicy

from tandem.events.bus import Bus
from tandem.events.cancel import raise_if_cancelled
from tandem.events.catalog import AlertRaised, VmFenced, VmFenceFailed, VmFenceRequested
from tandem.events.catalog.alerts import AlertRaisedPayload
from tandem.events.catalog.fencing import VmFenceRequestedPayload
from tandem.events.catalog.sagas import SagaStepSpec
from tandem.events.catalog.vocabulary import Role, Severity
from tandem.events.errors import DecodeError
from tandem.events.registry import decode_event
from tandem.events.subjects import EVENTS_STREAM, events_filter
from tandem.orchestrator.liveness import Liveness
from tandem.orchestrator.settings import FencingConfig, OrchestratorFile
from tandem.orchestrator.state_records import SagaRecord

log = logging.getLogger(__name__)

ALERT_CODE = "fence.failed"
#: (saga, event class, payload, epoch): the runner's way of publishing a saga's events.
Publish = Callable[[SagaRecord, Any, Any, int], Awaitable[None]]
TAIL_BYTES = 2048
TAIL_CHARS = 300


class FenceFailed(Exception):
    """The old Active is not known to be fenced; ``str()`` says why (the step's reason)."""


class _NotFenced(Exception):
    pass


class Fencer:
    def __init__(
        self,
        bus: Bus,
        liveness: Liveness,
        file: OrchestratorFile,
        *,
        poll_s: float = 0.05,
        command_retry_s: float = 1.0,
    ) -> None:
        self.bus = bus
        self.liveness = liveness
        self.file = file
        self.poll_s = poll_s
        self.command_retry_s = command_retry_s

    async def fence(self, saga: SagaRecord, spec: SagaStepSpec, publish: Publish) -> str:
        """Fence ``spec.node`` of ``saga.cluster``; the reason, or ``FenceFailed``."""
        policy = self.file.fencing_for(saga.cluster, spec.node)
        deadline = asyncio.get_running_loop().time() + spec.timeout_s
        try:
            if policy.method == "command":
                return await self._command(saga.cluster, spec.node, policy, deadline)
            if policy.method == "vmware":
                return await self._vmware(saga, spec, policy, deadline)
            return await self._guard(saga.cluster, spec.node, spec.epoch, policy, deadline)
        except _NotFenced as exc:
            why = str(exc)
        except Exception as exc:  # the bus away (the VMware bridge's events unreadable)
            why = f"{type(exc).__name__}: {exc}".rstrip(": ")
        what = f"fencing {spec.node} (the old Active of {saga.cluster}) by {policy.method} failed"
        expose = policy.on_failure == "expose"
        then = (
            f"on_failure = expose: {saga.to_node} is exposed anyway (two Actives are possible)"
            if expose
            else f"{saga.to_node} is not exposed: it needs an operator"
        )
        message = f"{what}: {why}; {then}"
        log.error("saga %s: %s", saga.id, message)
        alert = AlertRaisedPayload(
            code=ALERT_CODE,
            severity=Severity.WARNING if expose else Severity.CRITICAL,
            message=message,
            subject=spec.node,  # the old Active not known fenced: one alert per node
            details={"node": spec.node, "method": policy.method, "on_failure": policy.on_failure},
        )
        await publish(saga, AlertRaised, alert, spec.epoch)
        if expose:
            return f"{what}: {why}; the operator chose to expose anyway (on_failure = expose)"
        raise FenceFailed(f"{what}: {why}")

    # -- guard --------------------------------------------------------------------------------

    async def _guard(
        self, cluster: str, node: str, epoch: int, policy: FencingConfig, deadline: float
    ) -> str:
        self.liveness.watch(cluster, node)  # its lease is read from now on, if it was not
        loop = asyncio.get_running_loop()
        while True:
            raise_if_cancelled()  # a timed wait may have swallowed a stop
            verdict = self.guard_verdict(cluster, node, epoch, policy.clock_allowance_s)
            if verdict:
                return verdict
            left = deadline - loop.time()
            if left <= 0:
                raise _NotFenced(self._guard_failure(cluster, node, epoch, policy))
            await asyncio.sleep(min(self.poll_s, left))

    def _ttl(self, cluster: str, node: str) -> tuple[float, str]:
        entry = self.liveness.seen.get((cluster, node))
        if entry is not None and entry.lease_ttl_s is not None:
            return entry.lease_ttl_s, ""
        assumed = self.liveness.timeout_s(cluster, node)
        return assumed, f"; no lease value seen, its ttl taken as {assumed:g}s"

    def guard_verdict(self, cluster: str, node: str, epoch: int, allowance_s: float) -> str:
        """Why ``node`` is fenced now, or '' while that is not known."""
        entry = self.liveness.seen.get((cluster, node))
        read_at = self.liveness.lease_read_at(cluster, node)
        if entry is None or read_at is None:
            return ""  # its lease not read yet: nothing is known
        if entry.lease_role == Role.PASSIVE and (entry.lease_epoch or 0) >= epoch:
            return f"{node} hid itself (lease: passive at epoch {entry.lease_epoch})"
        ttl, note = self._ttl(cluster, node)
        since = entry.lease_at if entry.lease_at is not None else self.liveness.started
        silent = read_at - since
        if silent < ttl + allowance_s:
            return ""
        return (
            f"{node}'s lease silent for {silent:.1f}s (ttl {ttl:g}s + {allowance_s:g}s "
            f"allowance{note}): its guard has hidden it"
        )

    def _guard_failure(self, cluster: str, node: str, epoch: int, policy: FencingConfig) -> str:
        entry = self.liveness.seen.get((cluster, node))
        read_at = self.liveness.lease_read_at(cluster, node)
        if entry is None or read_at is None:
            return f"its lease in tandem_leases could not be read (node.{cluster}.{node})"
        ttl, note = self._ttl(cluster, node)
        since = entry.lease_at if entry.lease_at is not None else self.liveness.started
        silent = max(0.0, read_at - since)
        plays = f"{entry.lease_role or 'no role'} at epoch {entry.lease_epoch}"
        return (
            f"its lease was renewed again (silent for {silent:.1f}s only, the guard needs ttl "
            f"{ttl:g}s + {policy.clock_allowance_s:g}s allowance{note}) and it did not hide "
            f"itself at epoch {epoch} (lease: {plays})"
        )

    # -- command ------------------------------------------------------------------------------

    async def _command(
        self, cluster: str, node: str, policy: FencingConfig, deadline: float
    ) -> str:
        assert policy.command is not None  # the config's validator requires it
        argv = [a.replace("{cluster}", cluster).replace("{node}", node) for a in policy.command]
        shown = shlex.join(argv)
        loop = asyncio.get_running_loop()
        attempts, last = 0, ""
        while (left := deadline - loop.time()) > 0:
            attempts += 1
            limit = min(policy.timeout_s or left, left)
            ok, detail = await run_fence_command(argv, limit)
            if ok:
                again = f" (attempt {attempts})" if attempts > 1 else ""
                return f"fence command {shown} exited 0{again}{detail}"
            last = detail
            log.warning("fence command %s (attempt %s): %s", shown, attempts, detail)
            if deadline - loop.time() <= self.command_retry_s:
                break
            await asyncio.sleep(self.command_retry_s)
        tried = f" ({attempts} attempts)" if attempts > 1 else ""
        raise _NotFenced(f"fence command {shown}{tried}: {last or 'no time left to run it'}")

    # -- vmware -------------------------------------------------------------------------------

    async def _vmware(
        self, saga: SagaRecord, spec: SagaStepSpec, policy: FencingConfig, deadline: float
    ) -> str:
        loop = asyncio.get_running_loop()
        wait = min(policy.timeout_s or spec.timeout_s, max(0.1, deadline - loop.time()))
        request = VmFenceRequested(
            cluster=saga.cluster,
            node=spec.node,
            epoch=spec.epoch,
            correlation_id=saga.id,
            payload=VmFenceRequestedPayload(
                vm=policy.vm,
                reason=f"{saga.kind} {saga.id}: fence the old Active before {saga.to_node} "
                "is exposed",
                timeout_s=wait,
            ),
        )
        vm = policy.vm or f"the VM of {spec.node} in the bridge's [vms] map"
        end = loop.time() + wait
        sub = await self.bus.js.subscribe(
            events_filter(saga.cluster),
            stream=EVENTS_STREAM,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.NEW,
        )
        try:
            await self._publish_request(request, end)
            while (left := end - loop.time()) > 0:
                try:
                    msg = await sub.next_msg(timeout=min(0.5, left))
                except (NatsTimeoutError, TimeoutError):
                    continue
                try:
                    event = decode_event(msg.data)
                except DecodeError:
                    continue  # the state projection dead-letters it
                if event.causation_id != request.id:
                    continue
                if isinstance(event, VmFenced):
                    p = event.payload
                    return f"VM {p.vm_name} ({p.vm}) of {spec.node}: {p.detail} (VMware bridge)"
                if isinstance(event, VmFenceFailed):
                    raise _NotFenced(
                        f"the VMware bridge did not power off {vm}: {event.payload.reason}"
                    )
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        raise _NotFenced(
            f"the VMware bridge did not answer within {wait:g}s about {vm} (is it running?)"
        )

    async def _publish_request(self, request: VmFenceRequested, end: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            raise_if_cancelled()  # a timed wait may have swallowed a stop
            try:
                await self.bus.publish(request, timeout=max(0.5, min(5.0, end - loop.time())))
                return
            except Exception as exc:  # the same id: a retry is stored once
                if loop.time() >= end:
                    raise _NotFenced(f"the fence request was not stored: {exc}") from None
                log.warning("fence request not stored (%s), retrying", exc)
                await asyncio.sleep(0.2)


async def run_fence_command(argv: list[str], timeout_s: float) -> tuple[bool, str]:
    """Run ``argv`` for at most ``timeout_s`` (then kill its process group): (exit 0, detail
    with the tails of stdout and stderr)."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # its own process group: killed whole on timeout
        )
    except OSError as exc:
        return False, f"cannot be run: {exc.strerror or exc}"
    assert proc.stdout is not None and proc.stderr is not None
    readers = [asyncio.create_task(_tail(proc.stdout)), asyncio.create_task(_tail(proc.stderr))]
    code: int | None
    try:
        code = await asyncio.wait_for(proc.wait(), timeout_s)
    except TimeoutError:
        code = None
        _kill_group(proc.pid)
        await proc.wait()
    except asyncio.CancelledError:
        _kill_group(proc.pid)
        raise
    finally:
        # A child that left the process group may hold the pipes: read for a moment only.
        done, pending = await asyncio.wait(readers, timeout=1.0)
        for task in pending:
            task.cancel()
    out, err = (r.result() if r in done and not r.cancelled() else b"" for r in readers)
    detail = _outputs(out, err)
    if code is None:
        return False, f"still running after {timeout_s:g}s: killed{detail}"
    if code == 0:
        return True, detail
    if code < 0:
        return False, f"killed by signal {-code}{detail}"
    return False, f"exited {code}{detail}"


async def _tail(stream: asyncio.StreamReader) -> bytes:
    kept = b""
    while chunk := await stream.read(4096):
        kept = (kept + chunk)[-TAIL_BYTES:]
    return kept


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _outputs(out: bytes, err: bytes) -> str:
    parts = []
    for name, data in (("stdout", out), ("stderr", err)):
        text = " | ".join(line.strip() for line in data.decode(errors="replace").splitlines())
        text = text.strip(" |")
        if text:
            cut = "..." if len(text) > TAIL_CHARS else ""
            parts.append(f"{name}: {cut}{text[-TAIL_CHARS:]}")
    return "; " + "; ".join(parts) if parts else ""
