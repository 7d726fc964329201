"""Settings of the orchestrator service (environment: TANDEM_ORCHESTRATOR_*)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

from tandem.events.names import NodeName
from tandem.events.settings import load_settings


class OrchestratorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TANDEM_ORCHESTRATOR_", extra="forbid")

    #: The name this instance uses as the node of the events it publishes.
    instance: NodeName = "orchestrator"


def load() -> OrchestratorSettings:
    return load_settings(OrchestratorSettings)
