"""Settings of the node agent (environment: TANDEM_AGENT_*; a TOML file arrives with the
monitor/agent issue)."""

from __future__ import annotations

from typing import Any

from pydantic_settings import BaseSettings, SettingsConfigDict

from tandem.events.names import ClusterName, NodeName
from tandem.events.settings import load_settings


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TANDEM_AGENT_", extra="forbid")

    cluster: ClusterName
    node: NodeName


def load(**overrides: Any) -> AgentSettings:
    return load_settings(AgentSettings, **overrides)
