"""A node's configuration: one TOML file per node, environment variables override it.

``tandem agent --config node.toml --check`` validates it and prints the effective config.
A bad file fails with the file, the field and what is wrong (``SettingsError``, exit 2).
Environment overrides: ``TANDEM_NODE_<FIELD>``, nested tables with ``__``, values as JSON for
lists and tables (``TANDEM_NODE_BUS__SERVERS='["nats://10.0.0.2:4222"]'``,
``TANDEM_NODE_HEARTBEAT__INTERVAL_S=0.5``). See ``examples/node.toml`` for every field.
"""

from __future__ import annotations

import ipaddress
import re
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings import (
    SettingsError as EnvironmentSettingsError,
)

from tandem.agent.control.config import ApplicationConfig, dependency_order
from tandem.events.catalog.vocabulary import Identity
from tandem.events.names import ClusterName, NodeName
from tandem.events.settings import BusSettings, SettingsError, describe_validation_error, read_toml
from tandem.monitor.health.config import HealthCheckConfig
from tandem.monitor.network import NetworkConfig
from tandem.monitor.rules_config import RestartAction, RuleConfig
from tandem.monitor.settings import HeartbeatConfig
from tandem.replicator.settings import ReplicationOptions


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LeaseConfig(_Section):
    # Short by default: the orchestrator fails over only after the Active's lease has run
    # out, so the lease bounds the recovery time (see [failover]).
    # The arithmetic is in lease.py: the agent hides at ttl - margin, its node guard at
    # ttl - margin/2; a stall of the bus shorter than ttl - margin - renew_every fences nothing.
    ttl_s: float = Field(default=1.5, gt=0)
    renew_every_s: float = Field(default=0.2, gt=0)
    #: An Active that has not renewed for ttl - margin hides itself (the margin is the time
    #: it has to withdraw its address and stop its applications before the lease runs out).
    fence_margin_s: float = Field(default=0.4, gt=0)

    @model_validator(mode="after")
    def _fits(self) -> LeaseConfig:
        if self.fence_margin_s >= self.ttl_s:
            raise ValueError(f"fence_margin_s ({self.fence_margin_s}) must be below ttl_s")
        if self.renew_every_s >= self.ttl_s - self.fence_margin_s:
            raise ValueError(
                f"renew_every_s ({self.renew_every_s}) must be below ttl_s - fence_margin_s "
                f"({self.ttl_s - self.fence_margin_s:g}), or one late renewal fences the node"
            )
        return self


class FencingConfig(_Section):
    """The node guard: a separate process that hides the node and kills its applications
    when the agent's deadline passes (agent frozen, killed or starved)."""

    guard: bool = True
    #: Optional backstop: the Linux watchdog device the guard arms while the node serves.
    watchdog: str | None = None
    watchdog_timeout_s: int = Field(default=10, ge=1, le=3600)
    #: A node that fenced itself serves again when the role record still names it, no saga
    #: moved it and it holds its lease again (false: it waits for a step or an operator).
    unfence: bool = True


class FailoverConfig(_Section):
    """How long the Active may be silent (no heartbeat, no lease) before a failover, and
    whether it is automatic or waits for an operator. Read by the orchestrator."""

    #: Never shorter in effect than the lease's ttl: the orchestrator waits for both.
    timeout_s: float = Field(default=1.0, gt=0)
    mode: Literal["automatic", "managed"] = "automatic"


class PublicIdentityConfig(_Section):
    """How clients reach the Active: ``loopback`` (demo and tests, one machine), ``lan`` (a
    shared IP on an interface) or ``dns`` (a DR name moved to this site's address)."""

    kind: Literal["loopback", "lan", "dns"] = "loopback"
    address: str | None = None
    #: lan: the interface clients reach the public address on (the "public" network).
    interface: str | None = None
    #: lan: the address's prefix length on that interface (default 32 for IPv4, 128 for IPv6:
    #: the address only, the interface's own address already brings the subnet's route).
    prefix_len: int | None = Field(default=None, ge=0, le=128)
    #: lan only: the interface of the channel network (replication, heartbeats). Unset, or
    #: the same as ``interface``: one NIC carries both. Either way only the public address is
    #: ever added, removed or filtered, never the node's own channel address.
    channel_interface: str | None = None
    #: lan: the operating system whose tools plumb the address (``linux``: netlink and
    #: nftables; ``windows``: PowerShell NetTCPIP and firewall rules). Unset: this machine's.
    platform: Literal["linux", "windows"] | None = None
    #: dns: the DR name, and this site's address it should point to while this node is Active.
    dns_name: str | None = None
    site_address: str | None = None
    #: dns: how long the Expose step waits for the dns_updater's ``DnsUpdated`` naming
    #: site_address. Keep it below the orchestrator's step timeout (30 s by default).
    dns_wait_s: float = Field(default=20.0, gt=0, le=600)
    #: dns: no confirmation in time (or the update failed): raise an alert, then ``continue``
    #: (expose anyway) or ``fail`` (the Expose step fails, the saga compensates).
    dns_on_missing: Literal["continue", "fail"] = "continue"
    #: dns: without a role change naming this node in the events stream, how far back a
    #: ``DnsUpdated`` still counts.
    dns_lookback_s: float = Field(default=300.0, gt=0)
    #: loopback only: the public TCP port only the Active listens on, and the application's
    #: port on this node it forwards to (a stable address across switchovers on one machine).
    port: int | None = Field(default=None, ge=1, le=65535)
    forward_to: int | None = Field(default=None, ge=1, le=65535)
    #: lan (IPv4): gratuitous ARP after expose, this many times this many seconds apart (in
    #: the background: expose does not wait), so every client's ARP cache moves.
    announce_count: int = Field(default=3, ge=1, le=20)
    announce_interval_s: int = Field(default=1, ge=1, le=10)

    @model_validator(mode="after")
    def _complete(self) -> PublicIdentityConfig:
        need = {"lan": ("address", "interface"), "dns": ("dns_name", "site_address")}
        missing = [f for f in need.get(self.kind, ()) if getattr(self, f) is None]
        if missing:
            raise ValueError(f"a {self.kind} identity needs {' and '.join(missing)}")
        if (self.port is None) != (self.forward_to is None):
            raise ValueError("port and forward_to go together (the public port and the app's)")
        if self.port is not None and self.kind != "loopback":
            raise ValueError("port and forward_to are for the loopback identity only")
        if self.channel_interface is not None and self.kind != "lan":
            raise ValueError("channel_interface is for the lan identity only")
        if self.kind == "lan":
            _check_lan(self)
        elif self.platform is not None:
            raise ValueError("platform is for the lan identity only")
        if self.kind == "dns":
            _check_dns(self)
        else:
            dns_only = sorted(f for f in self.model_fields_set if f.startswith("dns_"))
            if dns_only:
                raise ValueError(f"{', '.join(dns_only)} are for the dns identity only")
        return self

    def describe(self) -> str:
        """Where clients reach the Active, for people (``tandem status``): the node's lease
        carries it to the orchestrator."""
        if self.kind == "lan":
            return f"{self.address}/{self.prefix_len} on {self.interface}"
        if self.kind == "dns":
            return f"{self.dns_name} -> {self.site_address}"
        return f"127.0.0.1:{self.port} (loopback)" if self.port else "loopback"

    def resolved_platform(self) -> Literal["linux", "windows"]:
        if self.platform is not None:
            return self.platform
        return "windows" if sys.platform == "win32" else "linux"

    @model_validator(mode="before")
    @classmethod
    def _default_prefix(cls, data: Any) -> Any:
        # Filled in here (not left None) so that --check shows the prefix really used.
        if isinstance(data, dict) and data.get("kind") == "lan" and data.get("prefix_len") is None:
            try:
                ip = ipaddress.ip_address(data.get("address") or "")
            except ValueError:
                return data  # the after-validator reports the bad address
            return {**data, "prefix_len": ip.max_prefixlen}
        return data


_IFNAME = re.compile(r"[^\s/:]{1,15}")


def _public_ip(
    field: str, value: str | None, role: str
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """``value`` as an address clients can be sent to (``role`` words the refusal)."""
    try:
        ip = ipaddress.ip_address(value or "")
    except ValueError:
        raise ValueError(f"{field} {value!r} is not an IPv4 or IPv6 address") from None
    if ip.is_unspecified or ip.is_multicast or ip.is_loopback or ip.is_link_local:
        raise ValueError(f"{field} {ip} cannot be {role}")
    return ip


def _check_lan(public: PublicIdentityConfig) -> None:
    ip = _public_ip("address", public.address, "a shared public address")
    if public.prefix_len is not None and public.prefix_len > ip.max_prefixlen:
        raise ValueError(f"prefix_len {public.prefix_len} is too long for IPv{ip.version} {ip}")
    if public.resolved_platform() == "windows":
        if public.channel_interface is not None:
            raise ValueError("channel_interface is for Linux nodes only (Windows: leave it out)")
        # An interface alias ("Ethernet 2"): any text up to 255 characters but a quote.
        if not 0 < len(public.interface or "") <= 255 or "'" in (public.interface or ""):
            raise ValueError(f"interface {public.interface!r} is not a valid interface alias")
        return
    for what in ("interface", "channel_interface"):
        name = getattr(public, what)
        # Linux: at most 15 bytes, no whitespace, '/' or ':' (IFNAMSIZ, dev_valid_name).
        if name is not None and (not _IFNAME.fullmatch(name) or name in (".", "..")):
            raise ValueError(f"{what} {name!r} is not a valid Linux interface name")


def _check_dns(public: PublicIdentityConfig) -> None:
    _public_ip("site_address", public.site_address, "a public address for clients")
    name = (public.dns_name or "").strip().rstrip(".")
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 2 or not all(_DNS_LABEL.fullmatch(x) for x in labels):
        raise ValueError(
            f"dns_name {public.dns_name!r} is not a fully qualified host name "
            "(labels of a-z, 0-9 and '-', at least two)"
        )


_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


class StartupConfig(_Section):
    #: When the role record names this node Active as the agent starts, expose and start the
    #: applications once the lease is held (off: wait for the orchestrator's steps).
    resume_active: bool = True


class ShutdownConfig(_Section):
    #: SIGTERM ends the agent within this long, whatever hangs (an application that ignores
    #: its stop, an unmount that blocks, the bus away): past it, the agent logs what it was
    #: doing and exits with code 1. Longer than the applications' stop_grace_s.
    deadline_s: float = Field(default=30.0, gt=0, le=3600)


class NodeConfig(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TANDEM_NODE_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    cluster: ClusterName
    node: NodeName
    identity: Identity
    peers: list[NodeName] = Field(default_factory=list)
    #: Pid files, the identity's state, the replicator's queues (default: beside the data).
    state_dir: Path
    vm: str | None = None
    bus: BusSettings = Field(default_factory=BusSettings)
    replication: ReplicationOptions = Field(default_factory=ReplicationOptions)
    applications: list[ApplicationConfig] = Field(default_factory=list)
    checks: list[HealthCheckConfig] = Field(default_factory=list)
    rules: list[RuleConfig] = Field(default_factory=list)
    network: NetworkConfig = Field(default_factory=NetworkConfig)
    public: PublicIdentityConfig = Field(default_factory=PublicIdentityConfig)
    heartbeat: HeartbeatConfig = Field(default_factory=HeartbeatConfig)
    lease: LeaseConfig = Field(default_factory=LeaseConfig)
    fencing: FencingConfig = Field(default_factory=FencingConfig)
    failover: FailoverConfig = Field(default_factory=FailoverConfig)
    startup: StartupConfig = Field(default_factory=StartupConfig)
    shutdown: ShutdownConfig = Field(default_factory=ShutdownConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The file arrives as init arguments; the environment must win over it.
        return env_settings, init_settings

    @model_validator(mode="after")
    def _coherent(self) -> NodeConfig:
        if self.node in self.peers:
            raise ValueError(f"peers must not include this node ({self.node})")
        try:
            dependency_order(self.applications)
        except ValueError as exc:
            raise ValueError(f"applications: {exc}") from None
        apps = {a.name for a in self.applications}
        checks = {c.name: c for c in self.checks}
        if len(checks) != len(self.checks):
            raise ValueError("checks: two checks have the same name")
        for check in self.checks:
            if check.application is not None and check.application not in apps:
                raise ValueError(
                    f"checks: {check.name} watches application {check.application!r}, "
                    "which is not configured"
                )
        for rule in self.rules:
            if rule.check not in checks:
                raise ValueError(f"rules: {rule.name} watches unknown check {rule.check!r}")
            for action in rule.actions:
                if isinstance(action, RestartAction):
                    app = action.application or checks[rule.check].application
                    if app is None:
                        raise ValueError(
                            f"rules: {rule.name} restarts an application, but neither the "
                            f"action nor its check {rule.check!r} names one (set application "
                            "on the action or on the check)"
                        )
                    if app not in apps:
                        raise ValueError(
                            f"rules: {rule.name} restarts {app!r}, which is not a configured "
                            "application (name one in the action or on the check)"
                        )
        return self


def load_node_config(path: Path, **overrides: Any) -> NodeConfig:
    """Read and validate ``path``; ``SettingsError`` names the file, the field, the problem."""
    data = read_toml(path)
    data.update(overrides)
    try:
        return NodeConfig(**data)
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc, str(path), NodeConfig)) from None
    except EnvironmentSettingsError as exc:  # an override that is not valid JSON
        raise SettingsError(f"{path}: an environment override is unreadable: {exc}") from None


def effective_config(config: NodeConfig) -> dict[str, Any]:
    """The config as the agent will use it, secrets masked (``--check`` prints this)."""
    return config.model_dump(mode="json")
