"""Settings of the node agent process: where its node config file is (``TANDEM_AGENT_CONFIG``).
Everything else is in that file (see ``config.py``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tandem.events.settings import load_settings


class AgentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TANDEM_AGENT_", extra="forbid")

    config: Path

    @field_validator("config")
    @classmethod
    def _a_file(cls, value: Path) -> Path:
        if not str(value).strip() or str(value) == ".":
            raise ValueError("the node's config file is needed")
        return value


def load(**overrides: Any) -> AgentSettings:
    return load_settings(AgentSettings, **overrides)
