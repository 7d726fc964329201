"""Settings of the dns_updater service (environment: TANDEM_DNS_UPDATER_*)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

from tandem.events.names import NodeName
from tandem.events.settings import load_settings


class DnsUpdaterSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TANDEM_DNS_UPDATER_", extra="forbid")

    #: The name this instance uses as the node of the events it publishes.
    instance: NodeName = "dns-updater"


def load() -> DnsUpdaterSettings:
    return load_settings(DnsUpdaterSettings)
