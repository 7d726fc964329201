"""Assembly of the monitor on one node: ``run(settings, bus)``.

Heartbeats out, peers' heartbeats in (failure detection), health checks feeding the rules
and their action ladder, network checks, runtime rule switches. Events leave through an
outbox, so what the monitor saw while the bus was away still reaches the record.
"""

from __future__ import annotations

import asyncio
import contextlib

from tandem.events.bus import Bus
from tandem.events.nodeboard import NodeBoard
from tandem.events.outbox import Outbox
from tandem.events.runtime import ServiceSpec, service_lifetime
from tandem.monitor.actions import ActionRunner, RestartHook
from tandem.monitor.healthloop import HealthLoop
from tandem.monitor.heartbeats import HeartbeatSender
from tandem.monitor.netloop import NetworkLoop
from tandem.monitor.peers import PeerWatch
from tandem.monitor.rules import RuleEngine
from tandem.monitor.settings import MonitorSettings, load
from tandem.monitor.switches import RuleSwitches


async def run(
    settings: MonitorSettings,
    bus: Bus,
    *,
    board: NodeBoard | None = None,
    outbox: Outbox | None = None,
    restart: RestartHook | None = None,
) -> None:
    """``board`` and ``outbox`` are shared with the other parts of a node agent; ``restart``
    is the agent's application control for the rules' restart rung (None: alert instead)."""
    async with contextlib.AsyncExitStack() as stack:
        if outbox is None:
            outbox = await stack.enter_async_context(Outbox(bus).sending())
        await _run(settings, bus, board if board is not None else NodeBoard(), outbox, restart)


async def _run(
    s: MonitorSettings, bus: Bus, board: NodeBoard, out: Outbox, restart: RestartHook | None
) -> None:
    async with service_lifetime(bus, "monitor", cluster=s.cluster, node=s.node, outbox=out):
        engine = RuleEngine(s.rules)
        actions = ActionRunner(
            s.cluster,
            s.node,
            board,
            out.put,
            restart,
            {c.name: c.application for c in s.checks},
            s.vm,
            s.state_dir,
        )
        interval = s.heartbeat.interval_s
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(
                HeartbeatSender(bus, s.cluster, s.node, s.identity, interval, board).run()
            )
            tasks.create_task(
                PeerWatch(
                    bus, s.cluster, s.node, s.peers, interval, s.heartbeat.detector, out.put
                ).run()
            )
            tasks.create_task(
                HealthLoop(s.cluster, s.node, s.checks, engine, actions, board, out.put).run()
            )
            tasks.create_task(NetworkLoop(s.cluster, s.node, s.network, board, out.put).run())
            tasks.create_task(
                RuleSwitches(bus, s.cluster, s.node, s.rules, engine, s.rule_switch_poll_s).run()
            )


SERVICE = ServiceSpec(name="monitor", load_settings=load, run=run)
