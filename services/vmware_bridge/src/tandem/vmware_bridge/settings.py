"""Settings of the vmware_bridge service (environment: TANDEM_VMWARE_BRIDGE_*)."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

from tandem.events.names import NodeName
from tandem.events.settings import load_settings


class VmwareBridgeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TANDEM_VMWARE_BRIDGE_", extra="forbid")

    #: The name this instance uses as the node of the events it publishes.
    instance: NodeName = "vmware-bridge"


def load() -> VmwareBridgeSettings:
    return load_settings(VmwareBridgeSettings)
