"""Settings of the monitor on one node. A node agent builds them from its config file (the
``[heartbeat]``, ``[[checks]]``, ``[[rules]]`` and ``[network]`` tables); run alone
(``tandem run monitor``) they come from the environment (``TANDEM_MONITOR_*``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tandem.events.catalog.vocabulary import Identity
from tandem.events.names import ClusterName, NodeName
from tandem.events.settings import load_settings
from tandem.monitor.detector import DetectorConfig
from tandem.monitor.health.config import HealthCheckConfig
from tandem.monitor.network import NetworkConfig
from tandem.monitor.rules_config import RuleConfig


class HeartbeatConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    interval_s: float = Field(default=0.25, gt=0, le=60)
    detector: DetectorConfig = Field(default_factory=DetectorConfig)


class MonitorSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TANDEM_MONITOR_", env_nested_delimiter="__", extra="forbid"
    )

    cluster: ClusterName
    node: NodeName
    identity: Identity | None = None
    #: The other nodes of the cluster, watched through their heartbeats.
    peers: list[NodeName] = Field(default_factory=list)
    heartbeat: HeartbeatConfig = Field(default_factory=HeartbeatConfig)
    checks: list[HealthCheckConfig] = Field(default_factory=list)
    rules: list[RuleConfig] = Field(default_factory=list)
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    #: This node's VM (name, MoRef or instance UUID) for VMware remediation requests.
    vm: str | None = None
    #: How often runtime rule switches in ``tandem_config`` are read.
    rule_switch_poll_s: float = Field(default=2.0, gt=0)
    #: Where the open rule alerts are kept across a restart (``alerted.py``); None: only in
    #: memory (an alert open at a restart is then not cleared by its rule).
    state_dir: Path | None = None

    @model_validator(mode="after")
    def _coherent(self) -> MonitorSettings:
        if self.node in self.peers:
            raise ValueError(f"peers must not include this node ({self.node})")
        names = [c.name for c in self.checks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"check names must be unique: {', '.join(dupes)} repeated")
        rule_names = [r.name for r in self.rules]
        dupes = sorted({n for n in rule_names if rule_names.count(n) > 1})
        if dupes:
            raise ValueError(f"rule names must be unique: {', '.join(dupes)} repeated")
        for rule in self.rules:
            if rule.check not in names:
                raise ValueError(
                    f"rule {rule.name} watches check {rule.check!r}, which is not configured "
                    f"(checks: {', '.join(names) or 'none'})"
                )
        return self


def load(**overrides: Any) -> MonitorSettings:
    return load_settings(MonitorSettings, **overrides)
