"""Rules turned off and on at runtime through the ``tandem_config`` bucket (real nats-server)."""

from __future__ import annotations

from tandem.events.bus import Bus
from tandem.events.catalog.vocabulary import HealthStatus
from tandem.events.subjects import CONFIG_BUCKET, rule_switch_key
from tandem.monitor.health.base import Sample
from tandem.monitor.rules import RuleEngine
from tandem.monitor.rules_config import RuleConfig
from tandem.monitor.switches import RuleSwitches


def down() -> Sample:
    return Sample(status=HealthStatus.CRITICAL, metrics={"up": 0.0}, message="down")


async def test_a_rule_disabled_in_the_config_bucket_stops_firing_until_enabled(bus: Bus) -> None:
    rule = RuleConfig.model_validate(
        {
            "name": "r1",
            "check": "c1",
            "metric": "up",
            "comparator": "==",
            "threshold": 0,
            "consecutive": 1,
            "actions": [{"do": "alert"}],
            "recover_s": 1,
        }
    )
    engine = RuleEngine([rule])
    switches = RuleSwitches(bus, "sw", "n1", [rule], engine, poll_s=0.1)
    kv = await bus.kv(CONFIG_BUCKET)

    await kv.put(rule_switch_key("sw", "n1", "r1"), b"disabled")
    await switches.poll()
    assert switches.current["r1"] is False
    assert engine.observe("c1", down(), now=1.0) == []

    await kv.put(rule_switch_key("sw", "n1", "r1"), b"enabled")
    await switches.poll()
    assert switches.current["r1"] is True
    fired = engine.observe("c1", down(), now=2.0)
    assert [d.rule for d in fired] == ["r1"]

    await kv.delete(rule_switch_key("sw", "n1", "r1"))  # back to the configured default
    await switches.poll()
    assert switches.current["r1"] is True
