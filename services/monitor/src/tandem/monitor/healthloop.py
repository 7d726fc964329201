"""Sampling of the node's health checks, each on its own interval, feeding the rules.

Only status changes become ``HealthChanged`` events (not every sample). A check that hangs
or raises yields a failed sample (``sample_within``) and the loop goes on. A rule's action
runs in the check's own task, so a restart (with its delay) pauses that check's sampling,
which would only see the restart, and no other.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from tandem.events.cancel import raise_if_cancelled
from tandem.events.catalog import HealthChanged
from tandem.events.catalog.health import HealthChangedPayload
from tandem.events.catalog.vocabulary import HealthStatus, Role
from tandem.events.envelope import Event
from tandem.events.nodeboard import NodeBoard
from tandem.monitor.actions import ActionRunner
from tandem.monitor.health.base import HealthPlugin, Sample, sample_within
from tandem.monitor.health.config import HealthCheckConfig, build_plugin
from tandem.monitor.rules import RuleEngine

log = logging.getLogger(__name__)


class HealthLoop:
    def __init__(
        self,
        cluster: str,
        node: str,
        checks: list[HealthCheckConfig],
        engine: RuleEngine,
        actions: ActionRunner,
        board: NodeBoard,
        emit: Callable[[Event], None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cluster = cluster
        self.node = node
        self.checks = [c for c in checks if c.enabled]
        self.engine = engine
        self.actions = actions
        self.board = board
        self.emit = emit
        self.clock = clock
        self.latest: dict[str, Sample] = {}
        self._ladder_resets = board.ladder_resets

    async def run(self) -> None:
        if not self.checks:
            await asyncio.Event().wait()  # nothing to watch; live as long as the monitor
        # Known before their first result: a node that has checks but no result yet is not
        # a node without checks (the status would take it as serving, unconfirmed).
        self.board.checks = {c.name: HealthStatus.UNKNOWN for c in self.checks} | self.board.checks
        async with asyncio.TaskGroup() as tasks:
            for check in self.checks:
                tasks.create_task(self._watch(check, build_plugin(check)))

    def serving(self) -> bool:
        """Applications run only on the Active (and not on one that fenced itself)."""
        return self.board.role is Role.ACTIVE and not self.board.fenced

    async def _watch(self, check: HealthCheckConfig, plugin: HealthPlugin) -> None:
        grace_until: float | None = self.clock() + check.start_grace_s
        while True:
            raise_if_cancelled()  # a timed wait may have swallowed a stop
            started = self.clock()
            held = check.application in self.board.held_apps  # an operator stopped it
            if check.application is not None and (held or not self.serving()):
                # A Passive's applications are stopped on purpose: checking them would only
                # make its rules "repair" them, starting them on the wrong node.
                self._pause(check, "an operator stopped it" if held else "this node does not serve")
                grace_until = None  # a new grace starts when the node serves again
            else:
                if grace_until is None:
                    grace_until = started + check.start_grace_s
                sample = await sample_within(plugin, check.timeout_s)
                in_grace = sample.status is not HealthStatus.OK and started < grace_until
                if sample.status is HealthStatus.OK:
                    grace_until = started  # the first good sample ends the grace
                await self.observe(check, sample, rules=not in_grace)
            await asyncio.sleep(max(0.0, check.interval_s - (self.clock() - started)))

    def _pause(self, check: HealthCheckConfig, why: str) -> None:
        # Unknown, not dropped: once this node is made Active, its heartbeat says the check
        # has no result yet (nobody serves) until the first sample, rather than no check.
        if self.latest.pop(check.name, None) is not None:
            log.info("%s: check %s paused: %s", self.node, check.name, why)
        if self.board.checks.get(check.name) is not HealthStatus.UNKNOWN:
            self.board.checks = {**self.board.checks, check.name: HealthStatus.UNKNOWN}

    async def observe(
        self, check: HealthCheckConfig, sample: Sample, *, rules: bool = True
    ) -> None:
        previous = self.latest.get(check.name)
        self.latest[check.name] = sample
        self.board.checks = {**self.board.checks, check.name: sample.status}
        if previous is None or previous.status is not sample.status:
            log.info("%s: check %s is %s: %s", self.node, check.name, sample.status, sample.message)
            self.emit(
                HealthChanged(
                    cluster=self.cluster,
                    node=self.node,
                    epoch=self.board.epoch,
                    payload=HealthChangedPayload(
                        application=check.application,
                        plugin=check.name,
                        status=sample.status,
                        previous=previous.status if previous else None,
                        metrics=sample.metrics,
                        message=sample.message,
                    ),
                )
            )
        if not rules:
            return  # still starting: the sample is shown, not held against the check
        if self.board.ladder_resets != self._ladder_resets:  # tandem cleanup
            self._ladder_resets = self.board.ladder_resets
            self.engine.reset()
        for decision in self.engine.observe(check.name, sample, self.clock()):
            try:
                await self.actions.carry_out(decision)
            except Exception:
                log.exception("action of rule %s failed", decision.rule)
        self.actions.recovered(self.engine.passing(check.name), check.name, sample.message)


def worst(statuses: list[HealthStatus]) -> HealthStatus:
    order = [HealthStatus.OK, HealthStatus.UNKNOWN, HealthStatus.WARNING, HealthStatus.CRITICAL]
    return max(statuses, key=order.index, default=HealthStatus.UNKNOWN)
