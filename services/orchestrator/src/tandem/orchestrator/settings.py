"""Settings of the orchestrator (environment: ``TANDEM_ORCHESTRATOR_*``; groups and
per-cluster policy may also come from a TOML file, ``TANDEM_ORCHESTRATOR_CONFIG``)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tandem.events.catalog.vocabulary import Identity
from tandem.events.names import ClusterName, NodeName
from tandem.events.settings import SettingsError, describe_validation_error, load_settings


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GroupMember(_Model):
    cluster: ClusterName
    #: Lower moves first.
    priority: int = 0
    #: Clusters of the group that must be up on their new Active before this one starts.
    depends_on: list[ClusterName] = Field(default_factory=list)


class GroupConfig(_Model):
    name: ClusterName
    members: list[GroupMember] = Field(min_length=1)
    #: When a member's switchover fails: move the members already moved back (compensate)
    #: or leave them where they are (stop).
    on_failure: Literal["compensate", "stop"] = "compensate"

    @model_validator(mode="after")
    def _deps_known(self) -> GroupConfig:
        names = [m.cluster for m in self.members]
        for member in self.members:
            unknown = [d for d in member.depends_on if d not in names]
            if unknown:
                raise ValueError(
                    f"group {self.name}: {member.cluster} depends on {', '.join(unknown)}, "
                    "not members of the group"
                )
        return self


class OrchestratorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TANDEM_ORCHESTRATOR_", extra="forbid")

    #: The name this instance uses as the node of the events it publishes (unique per replica).
    instance: NodeName = "orchestrator"
    api_host: str = "127.0.0.1"
    #: 0: a free port (printed and announced in ServiceStarted).
    api_port: int = Field(default=8700, ge=0, le=65535)
    #: Bearer tokens, one ``<role> <token>`` per line (roles viewer, operator, admin).
    tokens_file: Path | None = None
    #: The same as a string, ``;``-separated (for containers and the demo).
    tokens: str | None = None
    config: Path | None = None
    leader_ttl_s: float = Field(default=3.0, gt=0)
    leader_renew_s: float = Field(default=0.5, gt=0)
    #: Used for a node whose lease does not say (older agents).
    failover_timeout_s: float = Field(default=1.0, gt=0)
    step_timeout_s: float = Field(default=30.0, gt=0)
    #: Refuse a switchover or failover to a target out of sync or lagging more than this.
    guard: bool = True
    max_lag_bytes: int = Field(default=64 << 20, ge=0)
    #: Which Passive takes over: the first alive, healthy one in this order.
    prefer: list[Identity] = Field(
        default_factory=lambda: [Identity.SECONDARY, Identity.TERTIARY, Identity.PRIMARY]
    )
    #: An automatic switchover request older than this is not acted on (after a restart).
    request_max_age_s: float = Field(default=120.0, gt=0)
    decide_every_s: float = Field(default=0.1, gt=0)


class OrchestratorFile(_Model):
    groups: list[GroupConfig] = Field(default_factory=list)


def load() -> OrchestratorSettings:
    return load_settings(OrchestratorSettings)


def load_file(path: Path | None) -> OrchestratorFile:
    if path is None:
        return OrchestratorFile()
    try:
        data: Any = tomllib.loads(path.read_text())
    except OSError as exc:
        raise SettingsError(f"{path}: cannot be read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from None
    try:
        return OrchestratorFile.model_validate(data)
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc, str(path))) from None
