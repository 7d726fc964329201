"""What the node guard needs to fence the node, and the clock it keeps the deadline on.

The agent writes a ``FencePlan`` (JSON) for the guard when it starts it: how to hide the
public identity and which applications to kill. The guard never reads the node config itself,
so it cannot fail on a config the agent has already accepted, and it needs no bus.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from tandem.agent.config import NodeConfig


def boot_clock() -> float:
    """Seconds on CLOCK_BOOTTIME: shared by every process of the machine and, unlike the
    monotonic clock, still running while the machine (or its VM) is suspended, so a deadline
    on it has passed after a pause as long as it would have on the orchestrator's clock."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is None:  # not Linux: the monotonic clock is the best there is
        return time.monotonic()
    return time.clock_gettime(boottime)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class GuardedIdentity(_Model):
    kind: Literal["loopback", "lan", "dns", "windows"]
    address: str | None = None
    prefix_len: int | None = None
    interface: str | None = None
    channel_interface: str | None = None
    table: str | None = None
    #: loopback: the identity's state file.
    state_file: str | None = None
    #: loopback with a public port: the agent process itself listens on it, so a frozen
    #: agent keeps it until it is killed (the stand-in's only way to hide).
    held_by_agent: bool = False


class GuardedApp(_Model):
    name: str
    control: Literal["process", "systemd", "windows"]
    pid_file: str | None = None
    unit: str | None = None


class FencePlan(_Model):
    cluster: str
    node: str
    identity: GuardedIdentity
    apps: list[GuardedApp]
    #: Where the guard writes what it did, for the agent to turn into an event.
    report_dir: str
    #: Only one guard per node at a time: a new one waits for the previous one's lock.
    lock_file: str
    watchdog: str | None = None
    watchdog_timeout_s: int = 10


def plan_for(config: NodeConfig) -> FencePlan:
    from tandem.agent.identity.nftables import table_name_for

    public = config.public
    guard_dir = config.state_dir / "guard"
    if public.kind == "lan":
        kind: Literal["loopback", "lan", "dns", "windows"] = (
            "windows" if public.resolved_platform() == "windows" else "lan"
        )
        identity = GuardedIdentity(
            kind=kind,
            address=public.address,
            prefix_len=public.prefix_len,
            interface=public.interface,
            channel_interface=public.channel_interface,
            table=table_name_for(config.cluster),
        )
    elif public.kind == "loopback":
        identity = GuardedIdentity(
            kind="loopback",
            state_file=str(config.state_dir / "identity.json"),
            held_by_agent=public.port is not None,
        )
    else:
        identity = GuardedIdentity(kind="dns")
    apps = [
        GuardedApp(
            name=app.name,
            control=app.control,
            pid_file=str(app.pid_file or config.state_dir / "apps" / f"{app.name}.pid"),
            unit=app.unit,
        )
        for app in config.applications
    ]
    return FencePlan(
        cluster=config.cluster,
        node=config.node,
        identity=identity,
        apps=apps,
        report_dir=str(guard_dir / "reports"),
        lock_file=str(guard_dir / "guard.lock"),
        watchdog=config.fencing.watchdog,
        watchdog_timeout_s=config.fencing.watchdog_timeout_s,
    )
