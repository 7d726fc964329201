"""What the monitor does when a rule fires: the rung of the action ladder, as events.

Every firing is a ``RuleBreached`` event with the evidence. Then the rung: ``alert`` raises
an alert; ``restart`` waits the rung's delay and restarts the application through the
agent's hook (``ApplicationRestarted`` says how it went); ``switchover`` asks for one
(``SwitchoverRequested``, automatic, with the rule and the samples as the reason) — only an
Active can ask, a Passive raises an alert instead; ``vm_remediation`` asks the VMware bridge
(``VmRemediationRequested``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from tandem.events.catalog import (
    AlertCleared,
    AlertRaised,
    ApplicationRestarted,
    RuleBreached,
    SwitchoverRequested,
    VmRemediationRequested,
)
from tandem.events.catalog.alerts import AlertClearedPayload, AlertRaisedPayload
from tandem.events.catalog.health import ApplicationRestartedPayload, RuleBreachedPayload
from tandem.events.catalog.operations import SwitchoverRequestedPayload
from tandem.events.catalog.vmware import VmRemediationRequestedPayload
from tandem.events.catalog.vocabulary import Role, Severity
from tandem.events.envelope import Event
from tandem.events.nodeboard import NodeBoard
from tandem.monitor.alerted import AlertedRules
from tandem.monitor.rules import Decision
from tandem.monitor.rules_config import (
    AlertAction,
    RestartAction,
    SwitchoverAction,
    VmRemediationAction,
)

log = logging.getLogger(__name__)

#: The agent's way to restart one application: (ok, what happened).
RestartHook = Callable[[str], Awaitable[tuple[bool, str]]]


class ActionRunner:
    def __init__(
        self,
        cluster: str,
        node: str,
        board: NodeBoard,
        emit: Callable[[Event], None],
        restart: RestartHook | None,
        check_apps: dict[str, str | None],
        vm: str | None,
        state_dir: Path | None = None,
    ) -> None:
        self.cluster = cluster
        self.node = node
        self.board = board
        self.emit = emit
        self.restart = restart
        self.check_apps = check_apps
        self.vm = vm
        #: The codes of the alerts raised and not cleared yet (``recovered`` clears them),
        #: kept across a restart in ``state_dir``.
        self._alerted = AlertedRules(state_dir)

    def _event(self, cls: Any, payload: Any) -> None:
        self.emit(
            cls(cluster=self.cluster, node=self.node, epoch=self.board.epoch, payload=payload)
        )

    def _alert(self, code: str, severity: Severity, message: str) -> None:
        self._alerted.add(code)
        self._event(AlertRaised, AlertRaisedPayload(code=code, severity=severity, message=message))

    def recovered(self, rules: list[str], check: str, message: str) -> None:
        """These rules' check passes them again: each alert they raised ends."""
        for rule in rules:
            code = f"rule.{rule}"
            if code in self._alerted:
                self._alerted.discard(code)
                why = f"rule {rule}: check {check} passes it again" + (
                    f" ({message})" if message else ""
                )
                log.info("%s: %s", self.node, why)
                self._event(AlertCleared, AlertClearedPayload(code=code, reason=why))

    async def carry_out(self, d: Decision) -> None:
        action = d.action
        log.warning("%s: %s", self.node, d.reason)
        self._event(
            RuleBreached,
            RuleBreachedPayload(
                rule=d.rule,
                metric=d.metric,
                value=d.value,
                threshold=d.threshold,
                comparator=d.comparator,
                consecutive=d.consecutive,
                action=action.do,
                samples=list(d.samples),
            ),
        )
        if isinstance(action, AlertAction):
            self._alert(f"rule.{d.rule}", Severity(action.severity), d.reason)
        elif isinstance(action, RestartAction):
            await self._restart(d, action)
        elif isinstance(action, SwitchoverAction):
            self._switchover(d, action)
        elif isinstance(action, VmRemediationAction):
            self._vm(d, action)

    async def _restart(self, d: Decision, action: RestartAction) -> None:
        app = action.application or self.check_apps.get(d.check)
        if self.board.role is not Role.ACTIVE:
            self._alert(
                f"rule.{d.rule}",
                Severity.WARNING,
                f"{d.reason}; {app} not restarted: {self.node} is not the Active",
            )
            return
        if app is None or self.restart is None:
            why = "the rule names no application" if app is None else "no application control"
            self._alert(f"rule.{d.rule}", Severity.CRITICAL, f"{d.reason}; cannot restart: {why}")
            return
        await asyncio.sleep(action.delay_s)
        ok, reason = await self.restart(app)
        self._event(
            ApplicationRestarted,
            ApplicationRestartedPayload(
                application=app, attempt=d.attempt, ok=ok, reason=f"{reason} ({d.reason})"
            ),
        )

    def _switchover(self, d: Decision, action: SwitchoverAction) -> None:
        if self.board.role is not Role.ACTIVE:
            self._alert(
                f"rule.{d.rule}",
                Severity.CRITICAL,
                f"{d.reason}; no switchover asked: {self.node} is not the Active",
            )
            return
        self._event(
            SwitchoverRequested,
            SwitchoverRequestedPayload(
                to=action.to,
                requested_by=f"rule {d.rule} on {self.node}",
                reason=d.reason,
                automatic=True,
                rule=d.rule,
                samples=list(d.samples),
            ),
        )

    def _vm(self, d: Decision, action: VmRemediationAction) -> None:
        if self.vm is None:
            self._alert(
                f"rule.{d.rule}",
                Severity.CRITICAL,
                f"{d.reason}; no VM remediation asked: this node's config names no vm",
            )
            return
        self._event(
            VmRemediationRequested,
            VmRemediationRequestedPayload(
                vm=self.vm,
                action=action.vm_action,
                reason=d.reason,
                target_host=action.target_host,
                target_datastore=action.target_datastore,
                restart_application=self.check_apps.get(d.check)
                if action.restart_application
                else None,
            ),
        )
