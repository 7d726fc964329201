"""The rule engine: counts breaches per rule and climbs each rule's ladder of actions.

Pure logic: samples and ``now`` (monotonic seconds) go in, ``Decision`` objects come out; the
caller turns them into events and actually alerts, restarts or asks for a switchover.

Ladder semantics. When a rule's breach count reaches ``consecutive`` it fires its current rung
and the count starts again from zero, so every further rung needs ``consecutive`` fresh
breaches. ``alert`` fires once, ``restart`` ``tries`` times, then the ladder moves on. After the
last rung the rule is *exhausted* and stays quiet until ``recover_s`` seconds pass without a
breach; only then does the ladder go back to its first rung.
"""

from __future__ import annotations

import logging
import math
import operator
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tandem.events.catalog.vocabulary import HealthStatus
from tandem.monitor.health.base import Sample
from tandem.monitor.rules_config import (
    TERMINAL_ACTIONS,
    ActionConfig,
    AlertAction,
    Comparator,
    RestartAction,
    RuleConfig,
    RulesConfig,
    SwitchoverAction,
    VmRemediationAction,
)

__all__ = [
    "STATUS_METRIC",
    "STATUS_VALUES",
    "ActionConfig",
    "AlertAction",
    "Decision",
    "RestartAction",
    "RuleConfig",
    "RuleEngine",
    "RulesConfig",
    "SwitchoverAction",
    "VmRemediationAction",
    "metric_value",
]

log = logging.getLogger(__name__)

STATUS_METRIC = "status"
STATUS_VALUES: dict[HealthStatus, float] = {
    HealthStatus.OK: 0.0,
    HealthStatus.WARNING: 1.0,
    HealthStatus.CRITICAL: 2.0,
    HealthStatus.UNKNOWN: 3.0,
}
#: Upper bound on the samples carried as evidence in a decision (they travel in events).
EVIDENCE_MAX = 10

_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


def metric_value(metric: str, sample: Sample) -> float | None:
    """The rule's number from a sample; None when the check failed or the metric is absent."""
    if not sample.completed:
        return None
    if metric == STATUS_METRIC:
        return STATUS_VALUES[sample.status]
    value = sample.metrics.get(metric)
    # NaN compares false with everything: it would silently look healthy, so it is "missing".
    if value is None or math.isnan(value):
        return None
    return value


def evidence(sample: Sample) -> dict[str, Any]:
    return {
        "status": sample.status.value,
        "metrics": dict(sample.metrics),
        "message": sample.message,
        "completed": sample.completed,
        "taken_at": sample.taken_at,
    }


@dataclass(frozen=True)
class Decision:
    """One rung fired by one rule, with the evidence that made it fire."""

    rule: str
    check: str
    action: ActionConfig
    #: 1..tries for restart; always 1 for the other actions.
    attempt: int
    tries: int
    metric: str
    #: The last sample's value; None when it failed or lacked the metric.
    value: float | None
    threshold: float
    comparator: Comparator
    consecutive: int
    samples: tuple[dict[str, Any], ...]
    reason: str
    #: True when this was the ladder's last firing: the rule is now exhausted.
    exhausted: bool = False

    @property
    def terminal(self) -> bool:
        return self.action.do in TERMINAL_ACTIONS


@dataclass
class _State:
    enabled: bool
    evidence: deque[Sample]
    breaches: int = 0
    breach_times: deque[float] = field(default_factory=deque)
    rung: int = 0
    attempts: int = 0
    exhausted: bool = False
    last_breach_at: float | None = None
    #: Whether the last sample observed breached the rule (None: none observed yet).
    breaching: bool | None = None


def _fresh(rule: RuleConfig, enabled: bool) -> _State:
    size = min(max(rule.consecutive, 3), EVIDENCE_MAX)
    return _State(enabled=enabled, evidence=deque(maxlen=size))


class RuleEngine:
    """Evaluates every enabled rule against the samples of its check."""

    def __init__(self, rules: list[RuleConfig]) -> None:
        # Reuse the config's validation so duplicate names fail the same way everywhere.
        self._rules = {rule.name: rule for rule in RulesConfig(rules=rules).rules}
        self._states = {name: _fresh(rule, rule.enabled) for name, rule in self._rules.items()}

    @property
    def rules(self) -> list[RuleConfig]:
        return list(self._rules.values())

    def observe(self, check: str, sample: Sample, now: float) -> list[Decision]:
        decisions: list[Decision] = []
        for rule in self._rules.values():
            if rule.check != check:
                continue
            decision = self._observe(rule, self._states[rule.name], sample, now)
            if decision is not None:
                decisions.append(decision)
        return decisions

    def passing(self, check: str) -> list[str]:
        """The rules of ``check`` whose last sample did not breach them (their alerts, if
        they raised one, end)."""
        return [
            name
            for name, rule in self._rules.items()
            if rule.check == check and self._states[name].breaching is False
        ]

    def set_enabled(self, rule: str, enabled: bool) -> None:
        """Enable or disable a rule by name; a rule enabled again starts from scratch."""
        if rule not in self._rules:
            raise KeyError(f"no rule named {rule!r}; known: {', '.join(self._rules) or 'none'}")
        if self._states[rule].enabled != enabled:
            self._states[rule] = _fresh(self._rules[rule], enabled)
            log.info("rule %s %s", rule, "enabled" if enabled else "disabled")

    def reset(self) -> None:
        """Every rule back to its first rung, no breach counted (an operator's cleanup)."""
        self._states = {n: _fresh(r, self._states[n].enabled) for n, r in self._rules.items()}
        log.info("restart ladders reset: %s", ", ".join(self._rules) or "no rules")

    def status(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        for name, rule in self._rules.items():
            state = self._states[name]
            rows.append(
                {
                    "rule": name,
                    "check": rule.check,
                    "enabled": state.enabled,
                    "breaches": state.breaches,
                    "rung": state.rung,
                    "next_action": None if state.exhausted else rule.actions[state.rung].do,
                    "attempts": state.attempts,
                    "exhausted": state.exhausted,
                    "last_breach_at": state.last_breach_at,
                }
            )
        return rows

    def _observe(
        self, rule: RuleConfig, state: _State, sample: Sample, now: float
    ) -> Decision | None:
        if not state.enabled:
            return None
        self._maybe_recover(rule, state, now)
        state.evidence.append(sample)
        value = metric_value(rule.metric, sample)
        if value is None:
            if rule.missing == "ignore":
                return None
            breach = True
        else:
            breach = _COMPARE[rule.comparator](value, rule.threshold)

        if rule.window_s is not None:
            cutoff = now - rule.window_s
            while state.breach_times and state.breach_times[0] < cutoff:
                state.breach_times.popleft()
        state.breaching = breach
        if not breach:
            if rule.window_s is None:
                state.breaches = 0
            else:
                state.breaches = len(state.breach_times)
            return None

        state.last_breach_at = now
        if state.exhausted:
            # Quiet until recover_s without a breach; this breach restarts that wait.
            return None
        if rule.window_s is None:
            state.breaches += 1
        else:
            state.breach_times.append(now)
            state.breaches = len(state.breach_times)
        if state.breaches < rule.consecutive:
            return None
        return self._fire(rule, state, value)

    def _maybe_recover(self, rule: RuleConfig, state: _State, now: float) -> None:
        climbed = state.rung > 0 or state.attempts > 0 or state.exhausted
        if not climbed or state.last_breach_at is None:
            return
        if now - state.last_breach_at >= rule.recover_s:
            log.info(
                "rule %s: no breach for %.0fs, ladder back to its first rung",
                rule.name,
                now - state.last_breach_at,
            )
            state.rung = state.attempts = state.breaches = 0
            state.breach_times.clear()
            state.exhausted = False

    def _fire(self, rule: RuleConfig, state: _State, value: float | None) -> Decision:
        action = rule.actions[state.rung]
        tries = action.tries if isinstance(action, RestartAction) else 1
        state.attempts += 1
        attempt = state.attempts
        if attempt >= tries:
            state.rung += 1
            state.attempts = 0
            state.exhausted = state.rung >= len(rule.actions)
        state.breaches = 0
        state.breach_times.clear()
        reason = _reason(rule, state.evidence[-1], value, action, attempt, tries)
        if state.exhausted:
            reason += f"; ladder exhausted until {rule.recover_s:g}s without a breach"
        log.info("%s", reason)
        return Decision(
            rule=rule.name,
            check=rule.check,
            action=action,
            attempt=attempt,
            tries=tries,
            metric=rule.metric,
            value=value,
            threshold=rule.threshold,
            comparator=rule.comparator,
            consecutive=rule.consecutive,
            samples=tuple(evidence(sample) for sample in state.evidence),
            reason=reason,
            exhausted=state.exhausted,
        )


def _reason(
    rule: RuleConfig,
    last: Sample,
    value: float | None,
    action: ActionConfig,
    attempt: int,
    tries: int,
) -> str:
    condition = f"{rule.metric} {rule.comparator} {rule.threshold:g}"
    plural = "" if rule.consecutive == 1 else "s"
    if rule.window_s is None:
        count = f"for {rule.consecutive} consecutive sample{plural}"
    else:
        count = f"{rule.consecutive} time{plural} within {rule.window_s:g}s"
    if value is not None:
        evidence_text = f"last value {value:g}"
    elif not last.completed:
        evidence_text = f"last sample failed: {last.message}"
    else:
        evidence_text = f"metric {rule.metric} missing from the last sample"
    return (
        f"rule {rule.name}: {condition} {count} (threshold {rule.threshold:g}, "
        f"{evidence_text}); action {action.describe(attempt, tries)}"
    )
