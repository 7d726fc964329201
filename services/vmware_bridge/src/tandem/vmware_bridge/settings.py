"""Settings of the vmware_bridge service (environment: ``TANDEM_VMWARE_BRIDGE_*``; vCenter and
the VM map come from the TOML file named by ``TANDEM_VMWARE_BRIDGE_CONFIG``, see
``tandem.vmware_bridge.config``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from tandem.events.names import NodeName
from tandem.events.settings import load_settings


class VmwareBridgeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TANDEM_VMWARE_BRIDGE_", extra="forbid")

    #: The name this instance uses as the node of the events it publishes.
    instance: NodeName = "vmware-bridge"
    #: The config file (vCenter, credentials file, VM map). None: no vCenter; every request
    #: is answered with VmRemediationFailed saying so.
    config: Path | None = None
    #: A request older than this is not carried out (answered with VmRemediationFailed):
    #: resetting a VM for a fault seen long ago does more harm than good.
    request_max_age_s: float = Field(default=300.0, gt=0)
    #: How long finding the VM of a request may take (vCenter slow or away).
    lookup_timeout_s: float = Field(default=20.0, gt=0)


def load() -> VmwareBridgeSettings:
    return load_settings(VmwareBridgeSettings)
