"""The bridge's config file (TOML; its path in ``TANDEM_VMWARE_BRIDGE_CONFIG``) and the
vCenter credentials file it names.

Config file::

    [vcenter]
    host = "vcenter.example.com"
    port = 443                                # default 443
    credentials_file = "vcenter-credentials.toml"  # relative: to this file's folder
    verify_tls = true                         # default; false only for labs and simulators
    ca_file = "/etc/tandem/vcenter-ca.pem"    # optional: trust this CA (PEM) for vCenter
    task_timeout_s = 600                      # give up waiting for a vSphere task after this
    task_poll_s = 1.0                         # how often a running task is looked at
    http_timeout_s = 60                       # one SOAP call (connect, send, answer)
    login_retry_s = 300                       # after a refused login, wait this long before
                                              # trying the same credentials again

    [vms.demo]                                # the VM of each node, per cluster
    primary = "demo-primary"                  # a VM name,
    secondary = "vm-1234"                     # a MoRef,
    tertiary = "4210a1f2-0c4e-8d3e-6b4e-1f0c2b8e5a11"  # or an instance UUID

Credentials file (TOML, readable only by the service account; read at every login, so a
changed password takes effect without a restart)::

    username = "svc-tandem@vsphere.local"
    password = "..."

Every error names the file and the field.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from tandem.events.names import ClusterName, NodeName
from tandem.events.settings import SettingsError, describe_validation_error

MOREF = re.compile(r"vm-\d+")
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class VCenterConfig(_Model):
    host: str = Field(min_length=1)
    port: int = Field(default=443, ge=1, le=65535)
    credentials_file: Path
    verify_tls: bool = True
    ca_file: Path | None = None
    task_timeout_s: float = Field(default=600.0, gt=0)
    task_poll_s: float = Field(default=1.0, gt=0, le=60)
    http_timeout_s: float = Field(default=60.0, gt=0)
    login_retry_s: float = Field(default=300.0, ge=0)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


class BridgeConfig(_Model):
    vcenter: VCenterConfig
    #: cluster -> node -> VM (name, MoRef or instance UUID).
    vms: dict[ClusterName, dict[NodeName, str]] = Field(default_factory=dict)

    @field_validator("vms")
    @classmethod
    def _vm_ids(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        for cluster, nodes in value.items():
            for node, vm in nodes.items():
                if not vm.strip():
                    raise ValueError(f"{cluster}.{node}: the VM is empty")
        return value

    def vm_for(self, cluster: str | None, wanted: str) -> VmRef:
        """The VM ``wanted`` means: a node of ``cluster`` in the map (its VM), ``cluster/node``
        of any cluster in the map, or else a VM name, MoRef or instance UUID."""
        if "/" in wanted:
            c, _, n = wanted.partition("/")
            mapped = self.vms.get(c, {}).get(n)
            if mapped is None:
                raise LookupError(f"{wanted}: no such node in the [vms] map of the config")
            return VmRef.parse(mapped, node=wanted)
        mapped = self.vms.get(cluster, {}).get(wanted) if cluster is not None else None
        if mapped is not None:
            return VmRef.parse(mapped, node=f"{cluster}/{wanted}")
        return VmRef.parse(wanted)


@dataclass(frozen=True)
class VmRef:
    """How a VM is identified: by ``name``, ``moref`` (``vm-123``) or instance ``uuid``."""

    kind: Literal["name", "moref", "uuid"]
    value: str
    #: The node the VM was mapped from, if it was.
    node: str | None = None

    @classmethod
    def parse(cls, text: str, *, node: str | None = None) -> VmRef:
        text = text.strip()
        if MOREF.fullmatch(text):
            return cls("moref", text, node)
        if UUID.fullmatch(text):
            return cls("uuid", text.lower(), node)
        return cls("name", text, node)

    def __str__(self) -> str:
        what = {"name": "VM named", "moref": "VM with MoRef", "uuid": "VM with instance UUID"}
        mapped = f" (the VM of {self.node})" if self.node else ""
        return f"{what[self.kind]} {self.value!r}{mapped}"


class Credentials(_Model):
    username: str = Field(min_length=1)
    password: SecretStr


def _read_toml(path: Path, what: str) -> Any:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"{what} {path}: cannot be read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SettingsError(f"{what} {path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{what} {path}: not valid TOML: {exc}") from None


def load_config(path: Path) -> BridgeConfig:
    """Read and check the config file; relative paths in it are relative to its folder."""
    data = _read_toml(path, "vmware_bridge config")
    try:
        config = BridgeConfig.model_validate(data)
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc, str(path))) from None
    base = path.parent
    vc = config.vcenter
    changes: dict[str, Any] = {"credentials_file": base / vc.credentials_file}
    if vc.ca_file is not None:
        changes["ca_file"] = base / vc.ca_file
        if not changes["ca_file"].is_file():
            raise SettingsError(
                f"invalid configuration in {path}:\n"
                f"  vcenter.ca_file: {changes['ca_file']} is not a readable file"
            )
    if vc.ca_file is not None and not vc.verify_tls:
        raise SettingsError(
            f"invalid configuration in {path}:\n"
            "  vcenter.ca_file: given, but vcenter.verify_tls is false (nothing is verified)"
        )
    return config.model_copy(update={"vcenter": vc.model_copy(update=changes)})


def load_credentials(path: Path) -> Credentials:
    data = _read_toml(path, "vCenter credentials file")
    try:
        return Credentials.model_validate(data)
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc, str(path))) from None
