"""Settings of the monitor on one node (environment: TANDEM_MONITOR_*)."""

from __future__ import annotations

from typing import Any

from pydantic_settings import BaseSettings, SettingsConfigDict

from tandem.events.names import ClusterName, NodeName
from tandem.events.settings import load_settings


class MonitorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TANDEM_MONITOR_", extra="forbid")

    cluster: ClusterName
    node: NodeName


def load(**overrides: Any) -> MonitorSettings:
    return load_settings(MonitorSettings, **overrides)
