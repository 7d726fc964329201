"""Settings of the replicator on one node (environment: TANDEM_REPLICATOR_*)."""

from __future__ import annotations

from typing import Any

from pydantic_settings import BaseSettings, SettingsConfigDict

from tandem.events.names import ClusterName, NodeName
from tandem.events.settings import load_settings


class ReplicatorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TANDEM_REPLICATOR_", extra="forbid")

    cluster: ClusterName
    node: NodeName


def load(**overrides: Any) -> ReplicatorSettings:
    return load_settings(ReplicatorSettings, **overrides)
