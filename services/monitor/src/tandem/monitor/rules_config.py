"""Configuration of health rules: which metric of which check, when it breaches, and the ladder
of actions climbed as breaches keep coming (alert, restart, then switchover or VM remediation).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tandem.events.catalog.vocabulary import VmAction

Comparator = Literal["<", "<=", ">", ">=", "==", "!="]
RULE_NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


class _Config(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class AlertAction(_Config):
    do: Literal["alert"] = "alert"
    severity: Literal["warning", "critical"] = "warning"

    def describe(self, attempt: int, tries: int) -> str:
        return f"alert ({self.severity})"


class RestartAction(_Config):
    do: Literal["restart"] = "restart"
    #: None: the application of the rule's check (the caller resolves it).
    application: str | None = Field(default=None, min_length=1)
    tries: int = Field(default=3, ge=1)
    delay_s: float = Field(default=2.0, ge=0)

    def describe(self, attempt: int, tries: int) -> str:
        target = f" of {self.application}" if self.application else ""
        return f"restart{target} attempt {attempt}/{tries}"


class SwitchoverAction(_Config):
    do: Literal["switchover"] = "switchover"
    #: None: let the orchestrator pick the best Passive.
    to: str | None = Field(default=None, min_length=1)

    def describe(self, attempt: int, tries: int) -> str:
        return "switchover" + (f" to {self.to}" if self.to else "")


class VmRemediationAction(_Config):
    do: Literal["vm_remediation"] = "vm_remediation"
    vm_action: VmAction
    target_host: str | None = Field(default=None, min_length=1)
    target_datastore: str | None = Field(default=None, min_length=1)
    restart_application: bool = True

    def describe(self, attempt: int, tries: int) -> str:
        where = [f"to {x}" for x in (self.target_host, self.target_datastore) if x]
        return " ".join(["vm_remediation", self.vm_action.value, *where])


ActionConfig = Annotated[
    AlertAction | RestartAction | SwitchoverAction | VmRemediationAction,
    Field(discriminator="do"),
]


def _just_alert() -> list[ActionConfig]:
    return [AlertAction()]


#: Rungs after which nothing further can sensibly be tried on this node.
TERMINAL_ACTIONS = frozenset({"switchover", "vm_remediation"})


class RuleConfig(_Config):
    """Breach when ``metric <comparator> threshold`` on samples of the check ``check``."""

    name: str = Field(pattern=RULE_NAME_PATTERN)
    check: str = Field(min_length=1)
    #: A metric of the check's samples; ``status`` maps ok=0, warning=1, critical=2, unknown=3.
    metric: str = Field(min_length=1)
    comparator: Comparator
    threshold: float
    consecutive: int = Field(default=3, ge=1)
    #: When set, ``consecutive`` breaches within this many seconds fire, not necessarily in a
    #: row: a flapping check never strings three breaches together but is still broken.
    window_s: float | None = Field(default=None, gt=0)
    #: A failed sample (timed out, raised) or one without the metric. Breach by default: a hung
    #: check must not look healthy.
    missing: Literal["breach", "ignore"] = "breach"
    actions: list[ActionConfig] = Field(default_factory=lambda: _just_alert(), min_length=1)
    #: The ladder goes back to its first rung only after this long without a breach; one good
    #: sample is not enough, or an app that restarts fine and crashes again never escalates.
    recover_s: float = Field(default=300, gt=0)
    enabled: bool = True

    @field_validator("actions")
    @classmethod
    def _terminal_rung_last(cls, actions: list[ActionConfig]) -> list[ActionConfig]:
        for index, action in enumerate(actions[:-1]):
            if action.do in TERMINAL_ACTIONS:
                raise ValueError(
                    f"rung {index + 1} ({action.do}) is terminal and must be the last rung; "
                    f"it is followed by {', '.join(a.do for a in actions[index + 1 :])}"
                )
        return actions


class RulesConfig(_Config):
    """All rules of a node; names are unique because operators enable and disable by name."""

    rules: list[RuleConfig] = Field(default_factory=list)

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, rules: list[RuleConfig]) -> list[RuleConfig]:
        seen: set[str] = set()
        for rule in rules:
            if rule.name in seen:
                raise ValueError(f"rule name {rule.name!r} is used more than once")
            seen.add(rule.name)
        return rules
