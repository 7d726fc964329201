"""Settings of the dns_updater service (environment: ``TANDEM_DNS_UPDATER_*``).

``TANDEM_DNS_UPDATER_CONFIG`` names the TOML file of the names to move (see ``config.py`` and
``examples/dns_updater.toml``). Without it the service joins the bus and moves nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic_settings import BaseSettings, SettingsConfigDict

from tandem.dns_updater.config import load_config
from tandem.events.names import NodeName
from tandem.events.settings import load_settings


class DnsUpdaterSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TANDEM_DNS_UPDATER_", extra="forbid")

    #: The name this instance uses as the node of the events it publishes; its durable
    #: consumers are named ``<instance>-<cluster>``.
    instance: NodeName = "dns-updater"
    #: The TOML file of the DR names, servers, key and timeouts.
    config: Path | None = None


def load(**overrides: Any) -> DnsUpdaterSettings:
    """Settings from the environment; the config file is checked now, before the bus."""
    settings = load_settings(DnsUpdaterSettings, **overrides)
    if settings.config is not None:
        load_config(settings.config)
    return settings
