"""Settings of the replicator on one node (environment: ``TANDEM_REPLICATOR_*``).

Without ``protected_root`` the replicator protects nothing: it joins the bus and waits
(that is what a node does before its data is configured).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tandem.events.names import ClusterName, NodeName
from tandem.events.settings import load_settings


class ReplicationOptions(BaseModel):
    """How a node replicates (the ``[replication]`` table of a node's config file)."""

    model_config = ConfigDict(extra="forbid")

    #: The protected folder: source on the Active, replica on a Passive.
    protected_root: Path | None = None
    #: Send-queue spill, receive queue and apply position (default: beside the root).
    state_dir: Path | None = None
    capture: Literal["intercept", "watch"] = "watch"
    #: intercept: where applications use the folder (default: mounted over the folder itself).
    mountpoint: Path | None = None
    #: intercept: let users other than the agent's use the mount (an application with its own
    #: ``user``), with the kernel checking each caller against the files' owners and modes
    #: (``default_permissions``). A non-root agent needs ``user_allow_other`` in /etc/fuse.conf.
    allow_other: bool = False
    #: Used once, at first pairing, when ``tandem_roles`` has no record for the cluster yet.
    initial_role: Literal["active", "passive"] = "passive"
    codec: Literal["none", "zstd"] = "zstd"
    batch_bytes: int = Field(default=768 << 10, ge=4096, le=8 << 20)
    batch_age_s: float = Field(default=0.02, gt=0, le=60)
    memory_bytes: int = Field(default=64 << 20, ge=0)
    spill_quota_bytes: int = Field(default=1 << 30, ge=1 << 20)
    #: async: RPO = lag. sync (intercept only): a write returns once a target stored it.
    mode: Literal["async", "sync"] = "async"
    sync_timeout_s: float = Field(default=2.0, gt=0)
    #: When no target acks in time: degrade to async with an alert, or keep the writer waiting.
    sync_policy: Literal["degrade", "block"] = "degrade"
    gap_timeout_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _coherent(self) -> ReplicationOptions:
        if self.mode == "sync" and self.capture != "intercept":
            raise ValueError(
                "mode 'sync' needs capture 'intercept' (watch sees writes after the fact)"
            )
        return self


class ReplicatorSettings(BaseSettings, ReplicationOptions):
    model_config = SettingsConfigDict(env_prefix="TANDEM_REPLICATOR_", extra="forbid")

    cluster: ClusterName
    node: NodeName
    #: The other nodes of the cluster (the targets when this node is Active).
    peers: list[NodeName] = Field(default_factory=list)

    @model_validator(mode="after")
    def _not_own_peer(self) -> ReplicatorSettings:
        if self.node in self.peers:
            raise ValueError(f"peers must not include this node ({self.node})")
        return self

    @property
    def state(self) -> Path:
        if self.state_dir is not None:
            return self.state_dir
        assert self.protected_root is not None
        return self.protected_root.parent / f".tandem-{self.cluster}-{self.node}"


def load(**overrides: Any) -> ReplicatorSettings:
    return load_settings(ReplicatorSettings, **overrides)
