"""Settings of the orchestrator (environment: ``TANDEM_ORCHESTRATOR_*``; groups and
per-cluster policy may also come from a TOML file, ``TANDEM_ORCHESTRATOR_CONFIG``)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
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


FenceMethod = Literal["guard", "command", "vmware"]


class FencingConfig(_Model):
    """How the failover saga fences the old Active of ``cluster`` (one node, or every node
    of the cluster when ``node`` is absent) before it exposes the new one."""

    cluster: ClusterName
    node: NodeName | None = None
    #: guard: wait until the node's own guard has hidden it (its lease silent for ttl +
    #: allowance, or its lease says it hid at the new epoch); command: run ``command`` on
    #: this host; vmware: power the node's VM off through the VMware bridge.
    method: FenceMethod = "guard"
    #: argv; ``{cluster}`` and ``{node}`` are replaced in each argument. Exit 0 = fenced.
    command: list[str] | None = None
    #: command: how long one run may take; vmware: how long to wait for the bridge. Never
    #: longer than the step's deadline (the default).
    timeout_s: float | None = Field(default=None, gt=0)
    #: vmware: the VM (name, MoRef or instance UUID); absent: the node's VM in the bridge's
    #: ``[vms]`` map.
    vm: str | None = Field(default=None, min_length=1)
    #: guard: how much the node's clock may run slow against this host's over one lease.
    clock_allowance_s: float = Field(default=0.25, ge=0)
    #: When fencing fails: leave the new Active hidden for an operator (needs_operator) or
    #: expose it anyway (expose: two Actives are possible; an alert says so either way).
    on_failure: Literal["needs_operator", "expose"] = "needs_operator"

    @model_validator(mode="after")
    def _method_fields(self) -> FencingConfig:
        where = f"cluster {self.cluster}" + (f" node {self.node}" if self.node else "")
        if self.method == "command":
            if not self.command or not self.command[0].strip():
                raise ValueError(f'{where}: command: required (an argv list) with method "command"')
        elif self.command is not None:
            raise ValueError(f'{where}: command: only for method "command" (not {self.method})')
        if self.vm is not None:
            if self.method != "vmware":
                raise ValueError(f'{where}: vm: only for method "vmware" (not {self.method})')
            if self.node is None:
                raise ValueError(
                    f"{where}: vm: names one VM, so give the node too (or leave vm out to "
                    "use the VMware bridge's [vms] map)"
                )
        return self


class OrchestratorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TANDEM_ORCHESTRATOR_", extra="forbid")

    #: The name this instance uses as the node of the events it publishes (unique per replica).
    instance: NodeName = "orchestrator"
    api_host: str = "127.0.0.1"
    #: 0: a free port (printed and announced in ServiceStarted).
    api_port: int = Field(default=8700, ge=0, le=65535)
    #: Bearer tokens, one ``<role> <token>`` or ``<role> sha256:<hex>`` per line (roles
    #: viewer, operator, admin); read again when it changes (see ``api.auth``).
    tokens_file: Path | None = None
    #: The same as a string, ``;``-separated (for containers). A secret: masked in reprs.
    tokens: SecretStr | None = None
    config: Path | None = None
    leader_ttl_s: float = Field(default=3.0, gt=0)
    leader_renew_s: float = Field(default=0.5, gt=0)
    #: Used for a node whose lease does not say (older agents).
    failover_timeout_s: float = Field(default=1.0, gt=0)
    step_timeout_s: float = Field(default=30.0, gt=0)
    #: The RPO target of a cluster without a ``[[clusters]]`` table of its own.
    rpo_target_s: float = Field(default=60.0, gt=0)
    #: How often the targets' replication lag is sampled for ``GET /clusters/{c}/lag``.
    lag_sample_s: float = Field(default=10.0, gt=0)
    #: A step's deadline is its timeout plus this: a command that got no answer (the bus
    #: electing a leader or reconnecting, the agent restarting) is sent again meanwhile.
    step_slack_s: float = Field(default=5.0, ge=0)
    #: After the pivot a failing step is tried again with backoff for this long; then the
    #: saga stops for an operator (``needs_operator``, alert ``saga.stuck``).
    forward_budget_s: float = Field(default=120.0, gt=0)
    #: An Active that fenced itself, is alive and has not unfenced within this is failed over
    #: (it unfences by itself once it holds its lease again: a few lease periods at most).
    fenced_grace_s: float = Field(default=10.0, gt=0)
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
    #: Where this instance keeps its outbox (one folder per instance). Unset: in memory, and
    #: an event sent but not yet acknowledged when the process is killed is lost.
    state_dir: Path | None = None


class ClusterPolicy(_Model):
    """What the orchestrator holds a cluster to (``[[clusters]]``)."""

    name: ClusterName
    #: The recovery point objective: seconds of writes the cluster may lose at a failover.
    rpo_target_s: float = Field(gt=0)


class OrchestratorFile(_Model):
    groups: list[GroupConfig] = Field(default_factory=list)
    fencing: list[FencingConfig] = Field(default_factory=list)
    clusters: list[ClusterPolicy] = Field(default_factory=list)
    _rpo_targets: dict[str, float] = PrivateAttr(default_factory=dict)

    @field_validator("clusters")
    @classmethod
    def _one_policy_each(cls, value: list[ClusterPolicy]) -> list[ClusterPolicy]:
        names = [c.name for c in value]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"two [[clusters]] tables for {', '.join(twice)}")
        return value

    def model_post_init(self, context: Any, /) -> None:
        self._rpo_targets = {c.name: c.rpo_target_s for c in self.clusters}

    def rpo_target_for(self, cluster: str, default: float) -> float:
        return self._rpo_targets.get(cluster, default)

    @field_validator("fencing")
    @classmethod
    def _one_table_each(cls, value: list[FencingConfig]) -> list[FencingConfig]:
        seen: set[tuple[str, str | None]] = set()
        for f in value:
            key = (f.cluster, f.node)
            if key in seen:
                which = f"node {f.node}" if f.node else "every node"
                raise ValueError(f"two [[fencing]] tables for cluster {f.cluster}, {which}")
            seen.add(key)
        return value

    def fencing_for(self, cluster: str, node: str) -> FencingConfig:
        """The node's own table, else its cluster's, else the guard with its defaults."""
        by_key = {(f.cluster, f.node): f for f in self.fencing}
        found = by_key.get((cluster, node)) or by_key.get((cluster, None))
        return found or FencingConfig(cluster=cluster, node=node)


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
