"""Restart requests addressed to this node: ``ApplicationRestartRequested`` (the VMware bridge
publishes one after a VM remediation whose request named ``restart_application``).

A durable consumer per node (``durable_name``) reads the cluster's requests; the ones for
other nodes are acknowledged and skipped. Each request for this node is answered by one
``ApplicationRestarted`` (the monitor's restart outcome), named as caused by the request, with
``ok`` and the reason:

- the application is not configured on this node: refused, naming the known ones;
- the node is not the Active (Passive, or no role yet): ignored, nothing is started;
- the request is older than ``max_age_s`` (the agent was away): ignored;
- otherwise the application is restarted through ``ApplicationSet.restart`` (the monitor's
  path), within a timeout derived from its ``stop_grace_s`` and ``start_timeout_s``; a
  failure or a timeout is reported with the error. Should the node stop being the Active
  while it restarts, the application is stopped again and the outcome says so.

A request id already handled (a redelivery) is acknowledged and not carried out again. A
message on the subject that is not a valid request goes to the dead-letter stream (the
durable consumer's rule). First start of the durable: requests published from then on.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable

from nats.js.api import DeliverPolicy

from tandem.agent.apps import ApplicationSet
from tandem.agent.control.base import ControlError
from tandem.events.bus import Bus
from tandem.events.cancel import raise_if_cancelled
from tandem.events.catalog import ApplicationRestarted, ApplicationRestartRequested
from tandem.events.catalog.health import ApplicationRestartedPayload
from tandem.events.catalog.vocabulary import Role
from tandem.events.consumer import ConsumerOptions, DurableConsumer
from tandem.events.envelope import Event, utcnow
from tandem.events.nodeboard import NodeBoard
from tandem.events.subjects import events_filter

log = logging.getLogger(__name__)

#: Requests older than this are not carried out (the node was away; its applications were
#: started since by the steps or the role watch).
MAX_AGE_S = 300.0
#: Added to an application's stop grace and start timeout to bound its restart.
RESTART_MARGIN_S = 15.0
REMEMBER_REQUESTS = 4096
#: Wait before reading again after the bus failed the consumer (it reconnects meanwhile).
RETRY_S = (0.5, 1.0, 2.0, 5.0)

REQUEST_TYPE = ApplicationRestartRequested.type_key()[0]


def durable_name(cluster: str, node: str) -> str:
    """The node's durable consumer (``_`` cannot occur in names, so no two nodes share it)."""
    name = f"agent_restarts_{cluster}_{node}"
    if len(name) <= 128:  # the longest subject token the DLQ subject accepts
        return name
    return "agent_restarts_" + hashlib.sha256(f"{cluster}/{node}".encode()).hexdigest()[:40]


class RestartRequests:
    """Run with ``await requests.run()`` (until cancelled); ``emit`` queues an event."""

    def __init__(
        self,
        bus: Bus,
        cluster: str,
        node: str,
        board: NodeBoard,
        apps: ApplicationSet,
        emit: Callable[[Event], None],
        *,
        max_age_s: float = MAX_AGE_S,
    ) -> None:
        self.bus = bus
        self.cluster = cluster
        self.node = node
        self.board = board
        self.apps = apps
        self.emit = emit
        self.max_age_s = max_age_s
        self.timeouts = {
            a.name: a.stop_grace_s + a.start_timeout_s + RESTART_MARGIN_S for a in apps.ordered
        }
        self._seen: OrderedDict[str, None] = OrderedDict()

    @property
    def durable(self) -> str:
        return durable_name(self.cluster, self.node)

    def consumer(self) -> DurableConsumer:
        # One request at a time, acknowledged only once answered: the ack wait outlasts the
        # slowest restart, so a request is not redelivered while it is being carried out.
        longest = max(self.timeouts.values(), default=RESTART_MARGIN_S)
        options = ConsumerOptions(
            durable=self.durable,
            filter_subject=events_filter(self.cluster, REQUEST_TYPE),
            batch=1,
            ack_wait_s=longest + 30.0,
            deliver_policy=DeliverPolicy.NEW,
        )
        return DurableConsumer(self.bus, options, self.handle)

    async def run(self) -> None:
        """Read requests; a bus failure is logged and reading resumes (the agent goes on)."""
        failures = 0
        while True:
            raise_if_cancelled()  # a timed wait may have swallowed a stop
            try:
                await self.consumer().run()
                return  # stopped
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = RETRY_S[min(failures, len(RETRY_S) - 1)]
                failures += 1
                log.warning(
                    "%s: restart requests unreadable (%s: %s); again in %gs",
                    self.node,
                    type(exc).__name__,
                    exc,
                    delay,
                )
                await asyncio.sleep(delay)

    async def handle(self, event: Event) -> None:
        if not isinstance(event, ApplicationRestartRequested) or event.cluster != self.cluster:
            # Raised: the consumer dead-letters it with this reason.
            raise ValueError(
                f"expected an {REQUEST_TYPE} of cluster {self.cluster}, "
                f"got {event.type} of {event.cluster}"
            )
        if event.node != self.node:
            return  # for another node of the cluster
        if event.id in self._seen:
            log.info(
                "%s: restart request %s for %s seen before: not carried out again",
                self.node,
                event.id,
                event.payload.application,
            )
            return
        self._seen[event.id] = None
        while len(self._seen) > REMEMBER_REQUESTS:
            self._seen.popitem(last=False)
        ok, reason = await self._answer(event)
        self._record(event, ok, reason)

    async def _answer(self, request: ApplicationRestartRequested) -> tuple[bool, str]:
        p = request.payload
        name = p.application
        asked = f"asked by {p.requested_by}: {p.reason}"
        if name not in self.timeouts:
            known = ", ".join(self.apps.names()) or "none"
            why = f"refused: no application {name!r} on {self.node} (known: {known}); {asked}"
            log.warning("%s: restart of %s %s", self.node, name, why)
            return False, why
        if self.board.role is not Role.ACTIVE:
            plays = "has no role yet" if self.board.role is None else f"plays {self.board.role}"
            why = f"ignored: {self.node} is not the Active ({plays}), so it does not start {name}"
            log.info("%s: restart of %s %s; %s", self.node, name, why, asked)
            return False, f"{why}; {asked}"
        age = (utcnow() - request.occurred_at).total_seconds()
        if age > self.max_age_s:
            why = f"ignored: requested {age:.0f}s ago, more than {self.max_age_s:g}s"
            log.info("%s: restart of %s %s; %s", self.node, name, why, asked)
            return False, f"{why}; {asked}"
        log.info("%s: restarting %s, %s", self.node, name, asked)
        ok, done = await self._restart(name)
        if ok and self.board.role is not Role.ACTIVE:
            # The node was demoted (or fenced) while it restarted: it must not serve.
            done += f"; then {self.node} stopped being the Active: " + await self._stop(name)
            ok = False
        if ok:
            log.info("%s: %s", self.node, done)
        else:
            log.warning("%s: restart of %s failed: %s", self.node, name, done)
        return ok, (f"{done}; {asked}" if ok else f"failed: {done}; {asked}")

    async def _restart(self, name: str) -> tuple[bool, str]:
        timeout = self.timeouts[name]
        try:
            async with asyncio.timeout(timeout):
                return await self.apps.restart(name)
        except TimeoutError:
            return False, f"{name} restart did not finish within {timeout:g}s"
        except Exception as exc:  # an error the control did not turn into ControlError
            log.exception("%s: restart of %s raised", self.node, name)
            return False, f"{name} could not be restarted: {type(exc).__name__}: {exc}"

    async def _stop(self, name: str) -> str:
        timeout = self.timeouts[name]
        try:
            async with asyncio.timeout(timeout):
                return "; ".join(await self.apps.stop([name]))
        except TimeoutError:
            return f"{name} did not stop within {timeout:g}s"
        except ControlError as exc:
            return f"{name} could not be stopped: {exc.message}"

    def _record(self, request: ApplicationRestartRequested, ok: bool, reason: str) -> None:
        self.emit(
            ApplicationRestarted(
                cluster=self.cluster,
                node=self.node,
                epoch=self.board.epoch,
                payload=ApplicationRestartedPayload(
                    application=request.payload.application, attempt=1, ok=ok, reason=reason
                ),
            ).caused(request)
        )
