"""The dns_updater's TOML file (``TANDEM_DNS_UPDATER_CONFIG``; see ``examples/dns_updater.toml``).

Which DR names to move for which cluster, the site addresses of each node, the servers that
take the RFC 2136 updates and the ones that must answer the new addresses, the TSIG key, and
the timeouts. A bad file fails with the file, the field and what is wrong (``SettingsError``).
Relative key paths are read from the config file's directory.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal

import dns.exception
import dns.name
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tandem.dns_updater.tsigkey import TsigKey, load_key
from tandem.events.names import ClusterName, NodeName
from tandem.events.settings import SettingsError, describe_validation_error, read_toml


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError(f"{value!r} is not an IPv4 or IPv6 address") from None


def _dns_name(value: str) -> str:
    try:
        name = dns.name.from_text(value)
    except dns.exception.DNSException as exc:
        raise ValueError(f"{value!r} is not a valid DNS name: {exc}") from None
    if name == dns.name.root:
        raise ValueError("the root zone cannot be updated")
    return name.canonicalize().to_text()


def _one_or_many(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


IpAddress = Annotated[str, AfterValidator(_ip)]
#: An absolute DNS name, lower case, with its final dot.
DnsName = Annotated[str, AfterValidator(_dns_name)]
#: One address or a list of them (IPv4 ones become A records, IPv6 ones AAAA).
NodeAddresses = Annotated[
    list[IpAddress], BeforeValidator(_one_or_many), AfterValidator(_unique), Field(min_length=1)
]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)


def _key_from(value: Any, info: ValidationInfo) -> Any:
    """Read the key file named by ``value`` (relative to the config file's directory)."""
    if value is None or isinstance(value, TsigKey):
        return value
    if not isinstance(value, str | Path):
        raise ValueError("must be the path of a key file")
    path = Path(value).expanduser()
    base = (info.context or {}).get("base_dir")
    if not path.is_absolute() and base is not None:
        path = Path(base) / path
    return load_key(path)


class Server(_Model):
    address: IpAddress
    port: int = Field(default=53, ge=1, le=65535)

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


class UpdateConfig(_Model):
    #: Where updates are sent (the zone's primary server), tried in order in each attempt.
    servers: list[Server] = Field(min_length=1)
    #: How long one update request may take.
    timeout_s: float = Field(default=5.0, gt=0)
    protocol: Literal["tcp", "udp"] = "tcp"


class RetryConfig(_Model):
    """Retries after timeouts, refused connections and SERVFAIL: the delay starts at
    ``initial_s`` and is multiplied after each failure up to ``max_s``; the update is given up
    after ``attempts`` attempts or ``deadline_s`` seconds, whichever comes first."""

    initial_s: float = Field(default=0.5, gt=0)
    max_s: float = Field(default=10.0, gt=0)
    multiplier: float = Field(default=2.0, ge=1)
    attempts: int = Field(default=8, ge=1)
    deadline_s: float = Field(default=60.0, gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> RetryConfig:
        if self.max_s < self.initial_s:
            raise ValueError(f"max_s ({self.max_s}) must not be below initial_s ({self.initial_s})")
        return self


class VerifyConfig(_Model):
    #: The authoritative servers that must answer exactly the new addresses. Default: the
    #: update servers.
    servers: list[Server] | None = Field(default=None, min_length=1)
    #: How long to wait for all of them to answer the new addresses.
    timeout_s: float = Field(default=30.0, gt=0)
    #: Pause between two rounds of queries.
    interval_s: float = Field(default=0.5, gt=0)
    #: How long one query may take.
    query_timeout_s: float = Field(default=2.0, gt=0)


class ReconcileConfig(_Model):
    """The check that each DR name points at its cluster's current Active (moved when not):
    at start, every ``interval_s`` (0: never by itself), and on request."""

    at_start: bool = True
    interval_s: float = Field(default=60.0, ge=0)


class NameConfig(_Model):
    """A DR public name, moved to the site address of the new Active of ``cluster``."""

    cluster: ClusterName
    name: DnsName
    zone: DnsName
    ttl: int = Field(default=60, ge=0, le=2_147_483_647)
    #: Site addresses per node, one or a list each:
    #: ``{ primary = "10.0.0.5", secondary = ["10.1.0.5", "2001:db8::5"] }``.
    addresses: dict[NodeName, NodeAddresses] = Field(min_length=1)
    #: This name's own TSIG key (default: the top-level ``key_file``).
    key_file: TsigKey | None = None

    _key = field_validator("key_file", mode="before")(_key_from)

    @model_validator(mode="after")
    def _in_zone(self) -> NameConfig:
        if not dns.name.from_text(self.name).is_subdomain(dns.name.from_text(self.zone)):
            raise ValueError(f"name {self.name} is not in zone {self.zone}")
        return self

    @property
    def display_name(self) -> str:
        """The name as events and logs show it (no final dot)."""
        return self.name.rstrip(".")


class DnsUpdaterConfig(_Model):
    #: The TSIG key that signs the updates (BIND format, as written by ``tsig-keygen``).
    key_file: TsigKey | None = None
    update: UpdateConfig
    retry: RetryConfig = Field(default_factory=RetryConfig)
    verify: VerifyConfig = Field(default_factory=VerifyConfig)
    reconcile: ReconcileConfig = Field(default_factory=ReconcileConfig)
    names: list[NameConfig] = Field(default_factory=list)

    _key = field_validator("key_file", mode="before")(_key_from)

    @model_validator(mode="after")
    def _coherent(self) -> DnsUpdaterConfig:
        seen: set[str] = set()
        for index, entry in enumerate(self.names):
            if entry.name in seen:
                raise ValueError(f"names.{index}.name: {entry.name} is configured more than once")
            seen.add(entry.name)
            if entry.key_file is None and self.key_file is None:
                raise ValueError(
                    f"names.{index}.key_file: no TSIG key for {entry.name}: set key_file on "
                    "this name or at the top of the file"
                )
        return self

    def key_for(self, entry: NameConfig) -> TsigKey:
        key = entry.key_file or self.key_file
        assert key is not None  # checked by _coherent
        return key

    @property
    def verify_servers(self) -> list[Server]:
        return self.verify.servers or self.update.servers

    def clusters(self) -> dict[str, list[NameConfig]]:
        """The configured names of each cluster."""
        out: dict[str, list[NameConfig]] = {}
        for entry in self.names:
            out.setdefault(entry.cluster, []).append(entry)
        return out

    def longest_move_s(self) -> float:
        """An upper bound of the time one name takes to move (retries and verification)."""
        per_attempt = self.update.timeout_s * len(self.update.servers)
        per_round = 2 * self.verify.query_timeout_s + self.verify.interval_s  # A, then AAAA
        return self.retry.deadline_s + per_attempt + self.verify.timeout_s + per_round


def load_config(path: Path) -> DnsUpdaterConfig:
    """Read and validate ``path``; ``SettingsError`` names the file, the field, the problem."""
    data = read_toml(path, "TANDEM_DNS_UPDATER_CONFIG")
    try:
        return DnsUpdaterConfig.model_validate(data, context={"base_dir": path.parent})
    except ValidationError as exc:
        raise SettingsError(describe_validation_error(exc, str(path))) from None
