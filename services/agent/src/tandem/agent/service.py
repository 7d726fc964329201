"""Assembly of the node agent: replicator, monitor, step executor, lease, role watch and
restart requests (``restarts.py``) of one node, in one process. They share a ``NodeBoard``
and an ``Outbox``; none imports another service's internals (only ``run``, settings and
config models).

On a clean stop (SIGTERM) the agent hides the node and stops its applications before it
goes: an agent that is gone cannot renew the lease, and the node must not be left serving
while the rest of the cluster treats it as failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable
from typing import Any

from tandem.agent.apps import ApplicationSet, capture_gate
from tandem.agent.config import NodeConfig, load_node_config
from tandem.agent.executor import COMMANDS, StepExecutor
from tandem.agent.guard.link import GuardLink
from tandem.agent.guard.plan import plan_for
from tandem.agent.holds import HOLD_FILE
from tandem.agent.identity.base import NetworkIdentity
from tandem.agent.identity.dns import DnsIdentity
from tandem.agent.identity.loopback import LoopbackIdentity
from tandem.agent.identity.nftables import table_name_for
from tandem.agent.identity.publicport import PublicPort
from tandem.agent.identity.windows import WindowsLanIdentity
from tandem.agent.lease import LeaseKeeper
from tandem.agent.nodectl import COMMANDS as CONTROL_COMMANDS
from tandem.agent.nodectl import NodeControl
from tandem.agent.reannounce import reannounce_when_others_hide
from tandem.agent.restarts import RestartRequests
from tandem.agent.roles import RoleWatch
from tandem.agent.settings import AgentSettings, load
from tandem.events.bus import Bus
from tandem.events.envelope import Event
from tandem.events.nodeboard import NodeBoard
from tandem.events.outbox import Outbox
from tandem.events.rpc import CommandServer
from tandem.events.runtime import ServiceSpec, service_lifetime, stop_stage
from tandem.events.settings import SettingsError
from tandem.events.transient import keep_running
from tandem.monitor.service import run as run_monitor
from tandem.monitor.settings import MonitorSettings
from tandem.replicator.service import run as run_replicator
from tandem.replicator.settings import ReplicatorSettings

log = logging.getLogger(__name__)


def make_identity(
    config: NodeConfig, bus: Bus, emit: Callable[[Event], None] | None = None
) -> NetworkIdentity:
    """The public identity the config asks for; ``emit`` takes the alerts it raises."""
    public = config.public
    if public.kind == "loopback":
        address = public.address or "127.0.0.1"
        port = None
        if public.port is not None and public.forward_to is not None:
            port = PublicPort(address, public.port, "127.0.0.1", public.forward_to)
        return LoopbackIdentity(config.state_dir / "identity.json", address, port)
    if public.kind == "dns":
        assert public.dns_name is not None and public.site_address is not None
        return DnsIdentity(
            bus,
            config.cluster,
            config.node,
            public.dns_name,
            public.site_address,
            wait_s=public.dns_wait_s,
            on_missing=public.dns_on_missing,
            lookback_s=public.dns_lookback_s,
            emit=emit,
        )
    # The config validated that both are set for a lan identity.
    assert public.address is not None and public.interface is not None
    if public.resolved_platform() == "windows":
        try:
            return WindowsLanIdentity(
                config.cluster, public.address, public.interface, public.prefix_len
            )
        except ValueError as exc:
            raise SettingsError(f"public: {exc}") from exc
    # Imported here: netlink (pyroute2) is Linux only, the loopback demo runs anywhere.
    from tandem.agent.identity.linux import LinuxLanIdentity

    return LinuxLanIdentity(
        public.address,
        public.prefix_len,
        public.interface,
        table_name_for(config.cluster),
        channel_interface=public.channel_interface,
        announce_count=public.announce_count,
        announce_interval_s=public.announce_interval_s,
    )


def replicator_settings(config: NodeConfig) -> ReplicatorSettings:
    options: dict[str, Any] = config.replication.model_dump()
    if options["state_dir"] is None:
        options["state_dir"] = config.state_dir / "replication"
    return ReplicatorSettings(
        cluster=config.cluster, node=config.node, peers=config.peers, **options
    )


def monitor_settings(config: NodeConfig) -> MonitorSettings:
    return MonitorSettings(
        cluster=config.cluster,
        node=config.node,
        identity=config.identity,
        peers=config.peers,
        heartbeat=config.heartbeat,
        checks=config.checks,
        rules=config.rules,
        network=config.network,
        vm=config.vm,
        state_dir=config.state_dir / "monitor",
    )


async def run_agent(config: NodeConfig, bus: Bus) -> None:
    c = config
    await asyncio.to_thread(c.state_dir.mkdir, parents=True, exist_ok=True)
    board = NodeBoard()
    # Durable: what the node did while the bus was away (or just before it was killed)
    # reaches the record after the restart, in order, stored once (ids de-duplicate).
    outbox = await asyncio.to_thread(Outbox, bus, path=c.state_dir / "outbox")
    identity = make_identity(c, bus, outbox.put)
    guard = None
    if c.fencing.guard and sys.platform == "win32":
        log.warning(
            "no node guard on Windows yet: fencing relies on the agent and the orchestrator"
        )
    elif c.fencing.guard:
        # First: a previous run's guard may still be fencing (it holds the lock till done).
        guard = GuardLink(plan_for(c), c.state_dir / "guard" / "plan.json")
        await guard.start()
    await identity.reset_on_start()  # type: ignore[attr-defined]
    apps = ApplicationSet(
        c.applications, c.state_dir, gate=capture_gate(c.replication.protected_root, board)
    )
    lease = LeaseKeeper(
        bus,
        c.cluster,
        c.node,
        ttl_s=c.lease.ttl_s,
        renew_every_s=c.lease.renew_every_s,
        fence_margin_s=c.lease.fence_margin_s,
        board=board,
        fence=_unset_fence,
        emit=outbox.put,
        failover_timeout_s=c.failover.timeout_s,
        failover_mode=c.failover.mode,
        guard=guard,
        own_connection=True,
        public=c.public.describe(),
    )
    executor = StepExecutor(
        c.cluster,
        c.node,
        c.identity,
        apps,
        identity,
        board,
        outbox.put,
        gate=lease,
        steered_file=c.state_dir / "steered-by-saga",
        hold_file=c.state_dir / HOLD_FILE,
    )
    lease.fence = executor.fence
    roles = RoleWatch(
        bus,
        c.cluster,
        c.node,
        board,
        executor,
        apps,
        identity,
        lease,
        resume_active=c.startup.resume_active,
        claim_first=c.replication.initial_role == "active",
        unfence=c.fencing.unfence,
        emit=outbox.put,
        replicated=c.replication.protected_root is not None,
        hold_file=c.state_dir / HOLD_FILE,
    )
    restarts = RestartRequests(bus, c.cluster, c.node, board, apps, outbox.put)
    steps = CommandServer(
        bus,
        c.cluster,
        c.node,
        executor.handle,
        lambda: board.epoch,
        commands=COMMANDS,
        on_result=executor.record,
    )
    control = NodeControl(
        c.node,
        apps,
        board,
        [r.name for r in c.rules],
        gate=lease,
        hold_file=c.state_dir / HOLD_FILE,
    )
    operator_commands = CommandServer(
        bus,
        c.cluster,
        c.node,
        control.handle,
        lambda: board.epoch,
        commands=CONTROL_COMMANDS,
        on_result=executor.record,
    )
    sender = asyncio.create_task(outbox.run())
    try:
        async with service_lifetime(bus, "agent", cluster=c.cluster, node=c.node, outbox=outbox):
            await steps.start()
            await operator_commands.start()
            try:
                # A part that a bus fault ended is started again in place (keep_running); a
                # part that crashed for another reason ends the agent (the TaskGroup cancels
                # the others), so its supervisor restarts the node side together.
                parts_of_node = {
                    "lease keeper": lease.run,
                    "role watch": roles.run,
                    "restart requests": restarts.run,
                    "re-announcer": lambda: reannounce_when_others_hide(
                        bus, c.cluster, c.node, board, identity
                    ),
                    "replicator": lambda: run_replicator(
                        replicator_settings(c),
                        bus,
                        board=board,
                        on_result=executor.record,
                        outbox=outbox,
                    ),
                    "monitor": lambda: run_monitor(
                        monitor_settings(c), bus, board=board, outbox=outbox, restart=apps.restart
                    ),
                }
                async with asyncio.TaskGroup() as parts:
                    for name, part in parts_of_node.items():
                        parts.create_task(keep_running(f"{c.node}: {name}", part))
            finally:
                await operator_commands.stop()
                await steps.stop()
                with contextlib.suppress(Exception):
                    await asyncio.shield(_leave(identity, apps, outbox, guard))
    finally:
        await _stop_sending(sender, outbox)


async def _stop_sending(sender: asyncio.Task[None], outbox: Outbox) -> None:
    """Give the outbox a moment for what the stop itself said; the rest stays in its file."""
    with contextlib.suppress(BaseException):
        await asyncio.shield(outbox.flush(timeout=3))
    sender.cancel()
    with contextlib.suppress(BaseException):
        await sender
    outbox.close()


async def _unset_fence(reason: str) -> list[str]:
    raise RuntimeError("the lease keeper fences through the step executor")


async def _leave(
    identity: NetworkIdentity, apps: ApplicationSet, outbox: Outbox, guard: GuardLink | None
) -> None:
    """Hide and stop the applications. The guard is told last: until the node is hidden,
    it still hides it if this hangs."""
    stop_stage("hiding the public identity")
    await identity.hide()
    stop_stage("stopping the applications")
    try:
        await apps.stop()
    except Exception as exc:
        log.error("stopping the applications on the way out: %s", exc)
    if guard is not None:
        stop_stage("stopping the node guard")
        await guard.stop()


async def run(settings: AgentSettings, bus: Bus) -> None:
    await run_agent(load_node_config(settings.config), bus)


SERVICE = ServiceSpec(name="agent", load_settings=load, run=run)
