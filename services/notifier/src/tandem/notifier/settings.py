"""Settings of the notifier service (environment: ``TANDEM_NOTIFIER_*``).

``TANDEM_NOTIFIER_CONFIG`` names the TOML file of the routes (``config.py``,
``examples/notifier.toml``); ``TANDEM_NOTIFIER_STATE_DIR`` the folder of its delivery ledger,
its state (silences, alerts notified) and its outbox. Without a config the service joins the
bus and sends nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from tandem.events.names import NodeName
from tandem.events.settings import SettingsError, load_settings
from tandem.notifier.config import load_config


class NotifierSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TANDEM_NOTIFIER_", extra="forbid")

    #: The node of the events it publishes.
    instance: NodeName = "notifier"
    #: Its durable consumer of TANDEM_EVENTS (the bus identity ``notifier`` may use this one).
    durable: str = Field(default="notifier", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    config: Path | None = None
    state_dir: Path | None = None
    #: How long JetStream waits for an ack before it delivers a message again (the notifier
    #: says "still working" every third of it while a notification is on its way).
    ack_wait_s: float = Field(default=30.0, gt=1)


def load(**overrides: Any) -> NotifierSettings:
    """Settings from the environment; the config file is checked now, before the bus."""
    settings = load_settings(NotifierSettings, **overrides)
    if settings.config is not None:
        config = load_config(settings.config)
        if config.routes and settings.state_dir is None:
            raise SettingsError(
                "TANDEM_NOTIFIER_STATE_DIR: required with routes (the folder of the delivery "
                "ledger: what was sent survives a restart)"
            )
    return settings
