from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from tandem.events.catalog.vocabulary import HealthStatus, VmAction
from tandem.monitor.health.base import Sample, failed_sample
from tandem.monitor.rules import (
    ActionConfig,
    AlertAction,
    Decision,
    RestartAction,
    RuleConfig,
    RuleEngine,
    RulesConfig,
    SwitchoverAction,
    VmRemediationAction,
)

UP = Sample(status=HealthStatus.OK, metrics={"up": 1.0}, message="listening")
DOWN = Sample(status=HealthStatus.CRITICAL, metrics={"up": 0.0}, message="connection refused")


def rule(**overrides: Any) -> RuleConfig:
    base = {"name": "web-down", "check": "web", "metric": "up", "comparator": "==", "threshold": 0}
    return RuleConfig.model_validate(base | overrides)


def feed(engine: RuleEngine, samples: list[Sample], start: float = 0.0) -> list[Decision]:
    """Observe ``samples`` of the check "web", one per second from ``start``."""
    decisions: list[Decision] = []
    for index, sample in enumerate(samples):
        decisions += engine.observe("web", sample, start + index)
    return decisions


def test_fires_after_consecutive_breaches_and_counts_again_from_zero() -> None:
    engine = RuleEngine([rule(consecutive=3, actions=[{"do": "restart", "tries": 5}])])
    assert feed(engine, [DOWN, DOWN]) == []
    [decision] = feed(engine, [DOWN], start=2)
    assert decision.rule == "web-down" and decision.action.do == "restart"
    assert decision.attempt == 1 and decision.value == 0.0 and decision.consecutive == 3
    assert len(decision.samples) == 3
    assert decision.samples[-1] == {
        "status": "critical",
        "metrics": {"up": 0.0},
        "message": "connection refused",
        "completed": True,
        "taken_at": DOWN.taken_at,
    }
    assert decision.reason == (
        "rule web-down: up == 0 for 3 consecutive samples (threshold 0, last value 0); "
        "action restart attempt 1/5"
    )
    # The next rung needs three fresh breaches.
    assert feed(engine, [DOWN, DOWN], start=3) == []
    assert [d.attempt for d in feed(engine, [DOWN], start=5)] == [2]


def test_a_good_sample_resets_the_consecutive_count() -> None:
    engine = RuleEngine([rule(consecutive=3)])
    assert feed(engine, [DOWN, DOWN, UP, DOWN, DOWN]) == []
    assert engine.status()[0]["breaches"] == 2


def test_flapping_never_fires_without_a_window() -> None:
    engine = RuleEngine([rule(consecutive=3)])
    assert feed(engine, [DOWN, UP] * 50) == []


def test_flapping_fires_with_a_window_when_enough_breaches_fall_in_it() -> None:
    engine = RuleEngine([rule(consecutive=3, window_s=10)])
    decisions = feed(engine, [DOWN, UP, DOWN, UP, DOWN])  # breaches at t=0, 2, 4
    assert [d.action.do for d in decisions] == ["alert"]
    assert "3 times within 10s" in decisions[0].reason


def test_window_forgets_old_breaches() -> None:
    engine = RuleEngine([rule(consecutive=3, window_s=3)])
    # Breaches 4 s apart: never three within 3 s.
    assert feed(engine, [DOWN, UP, UP, UP] * 10) == []


def test_ladder_climbs_alert_then_restarts_then_switchover_then_goes_quiet() -> None:
    engine = RuleEngine(
        [
            rule(
                consecutive=2,
                actions=[
                    {"do": "alert", "severity": "critical"},
                    {"do": "restart", "tries": 2},
                    {"do": "switchover", "to": "node-b"},
                ],
            )
        ]
    )
    decisions = feed(engine, [DOWN] * 20)
    assert [(d.action.do, d.attempt) for d in decisions] == [
        ("alert", 1),
        ("restart", 1),
        ("restart", 2),
        ("switchover", 1),
    ]
    assert decisions[-1].terminal and decisions[-1].exhausted
    assert "action switchover to node-b" in decisions[-1].reason
    [row] = engine.status()
    assert row["exhausted"] and row["next_action"] is None


def test_a_last_rung_that_is_not_terminal_also_exhausts() -> None:
    engine = RuleEngine([rule(consecutive=1, actions=[{"do": "restart", "tries": 2}])])
    decisions = feed(engine, [DOWN] * 10)
    assert [d.attempt for d in decisions] == [1, 2]
    assert engine.status()[0]["exhausted"]


def test_one_good_sample_does_not_reset_the_ladder_but_recover_s_does() -> None:
    engine = RuleEngine(
        [rule(consecutive=1, recover_s=100, actions=[{"do": "alert"}, {"do": "restart"}])]
    )
    assert [d.action.do for d in feed(engine, [DOWN, UP, DOWN])] == ["alert", "restart"]
    # Good samples for less than recover_s: the ladder stays where it was.
    assert engine.observe("web", UP, 50.0) == []
    assert [d.attempt for d in engine.observe("web", DOWN, 60.0)] == [2]
    # recover_s after the last breach: back to the first rung.
    assert engine.observe("web", UP, 160.0) == []
    assert [d.action.do for d in engine.observe("web", DOWN, 161.0)] == ["alert"]


def test_exhausted_rule_stays_quiet_until_recover_s_without_breach() -> None:
    engine = RuleEngine([rule(consecutive=1, recover_s=100, actions=[{"do": "alert"}])])
    assert len(engine.observe("web", DOWN, 0.0)) == 1
    assert engine.observe("web", DOWN, 50.0) == []  # exhausted; restarts the recovery wait
    assert engine.observe("web", DOWN, 140.0) == []  # 90 s after the last breach: still quiet
    assert len(engine.observe("web", DOWN, 240.0)) == 1  # 100 s later: fresh ladder


def test_disabled_rule_never_fires_and_reenabling_starts_fresh() -> None:
    engine = RuleEngine([rule(consecutive=2, enabled=False)])
    assert feed(engine, [DOWN] * 10) == []
    [row] = engine.status()
    assert (row["enabled"], row["breaches"], row["rung"]) == (False, 0, 0)
    engine.set_enabled("web-down", True)
    assert feed(engine, [DOWN], start=10) == []
    engine.set_enabled("web-down", False)
    engine.set_enabled("web-down", True)
    assert feed(engine, [DOWN], start=11) == []  # the earlier breach was forgotten
    assert len(feed(engine, [DOWN], start=12)) == 1
    with pytest.raises(KeyError, match="no rule named 'nope'"):
        engine.set_enabled("nope", True)


def test_failed_sample_is_a_breach_unless_ignored() -> None:
    hung = failed_sample("http check timed out after 5s")
    breach = RuleEngine([rule(consecutive=2)])
    [decision] = feed(breach, [hung, hung])
    assert decision.value is None
    assert "last sample failed: http check timed out after 5s" in decision.reason
    assert decision.samples[-1]["completed"] is False

    ignore = RuleEngine([rule(consecutive=2, missing="ignore")])
    assert feed(ignore, [hung] * 10) == []


def test_missing_metric_is_a_breach_by_default() -> None:
    engine = RuleEngine([rule(consecutive=1, metric="latency_ms", comparator=">", threshold=500)])
    [decision] = feed(engine, [UP])
    assert "metric latency_ms missing" in decision.reason


def test_status_metric_maps_ok_warning_critical_unknown() -> None:
    engine = RuleEngine(
        [
            rule(
                metric="status",
                comparator=">=",
                threshold=2,
                consecutive=1,
                actions=[{"do": "restart", "tries": 10}],
            )
        ]
    )
    statuses = [HealthStatus.OK, HealthStatus.WARNING, HealthStatus.CRITICAL, HealthStatus.UNKNOWN]
    fired = []
    for index, status in enumerate(statuses):
        sample = Sample(status=status, message=status.value)
        fired += [(status, d.value) for d in engine.observe("web", sample, float(index))]
    assert fired == [(HealthStatus.CRITICAL, 2.0), (HealthStatus.UNKNOWN, 3.0)]


def test_only_the_rules_of_the_observed_check_count() -> None:
    engine = RuleEngine([rule(consecutive=1), rule(name="db-down", check="db", consecutive=1)])
    assert [d.rule for d in engine.observe("db", DOWN, 0.0)] == ["db-down"]
    assert engine.observe("other", DOWN, 0.0) == []


def test_action_configs_parse_by_their_do_field() -> None:
    actions = TypeAdapter(list[ActionConfig]).validate_python(
        [
            {"do": "alert"},
            {"do": "restart", "application": "web"},
            {"do": "vm_remediation", "vm_action": "vmotion", "target_host": "esx2"},
        ]
    )
    assert isinstance(actions[0], AlertAction) and actions[0].severity == "warning"
    assert isinstance(actions[1], RestartAction)
    assert (actions[1].tries, actions[1].delay_s) == (3, 2.0)
    assert isinstance(actions[2], VmRemediationAction) and actions[2].vm_action is VmAction.VMOTION
    assert actions[2].restart_application
    assert rule().actions == [AlertAction()]
    assert SwitchoverAction().to is None


def test_terminal_rung_must_be_last() -> None:
    with pytest.raises(ValidationError) as info:
        rule(actions=[{"do": "switchover"}, {"do": "alert"}])
    assert info.value.errors()[0]["loc"] == ("actions",)
    assert "rung 1 (switchover) is terminal and must be the last rung" in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"comparator": "=~"}, "comparator"),
        ({"name": "web down!"}, "name"),
        ({"name": "x" * 65}, "name"),
        ({"consecutive": 0}, "consecutive"),
        ({"actions": []}, "actions"),
        ({"actions": [{"do": "reboot"}]}, "actions"),
        ({"missing": "maybe"}, "missing"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_config_errors_name_the_field(overrides: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        rule(**overrides)
    assert info.value.errors()[0]["loc"][0] == field


def test_duplicate_rule_names_are_refused() -> None:
    with pytest.raises(ValidationError, match="'web-down' is used more than once"):
        RulesConfig(rules=[rule(), rule()])
    with pytest.raises(ValidationError):
        RuleEngine([rule(), rule(check="db")])


# --- property: never more decisions than breaches allow -----------------------------------

samples = st.sampled_from(
    [UP, DOWN, failed_sample("timed out"), Sample(status=HealthStatus.OK, message="no metric")]
)


@settings(max_examples=300)
@given(
    sequence=st.lists(st.tuples(samples, st.floats(min_value=0, max_value=50)), max_size=120),
    consecutive=st.integers(min_value=1, max_value=5),
    window_s=st.one_of(st.none(), st.floats(min_value=0.5, max_value=100)),
    recover_s=st.floats(min_value=0.5, max_value=200),
    missing=st.sampled_from(["breach", "ignore"]),
    tries=st.integers(min_value=1, max_value=4),
)
def test_never_more_decisions_than_breaches_over_consecutive(
    sequence: list[tuple[Sample, float]],
    consecutive: int,
    window_s: float | None,
    recover_s: float,
    missing: str,
    tries: int,
) -> None:
    config = rule(
        consecutive=consecutive,
        window_s=window_s,
        recover_s=recover_s,
        missing=missing,
        actions=[{"do": "alert"}, {"do": "restart", "tries": tries}, {"do": "switchover"}],
    )
    engine = RuleEngine([config])
    now, breaches, decisions = 0.0, 0, 0
    for sample, step in sequence:
        now += step
        value = sample.metrics.get("up") if sample.completed else None
        if value is None:
            breaches += missing == "breach"
        else:
            breaches += value == 0
        decisions += len(engine.observe("web", sample, now))
        assert decisions <= breaches // consecutive
