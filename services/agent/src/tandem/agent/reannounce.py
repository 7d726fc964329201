"""Announce the public address again when another node of the cluster reports that it hid.

A node whose agent was frozen may have answered for the address after this node exposed it
(before its guard hid it): a client that took its answer last keeps sending to it until its
ARP entry expires. Its ``NodeSelfFenced`` arrives once its agent runs again; the Active then
announces again. Live events only (a core subscription): one that arrives late is late for
this too, and an ARP entry expires by itself.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from nats.aio.msg import Msg

from tandem.events.bus import Bus
from tandem.events.cancel import raise_if_cancelled
from tandem.events.catalog import NodeSelfFenced
from tandem.events.catalog.vocabulary import Role
from tandem.events.nodeboard import NodeBoard
from tandem.events.registry import decode_event
from tandem.events.subjects import event_subject

log = logging.getLogger(__name__)


async def reannounce_when_others_hide(
    bus: Bus, cluster: str, node: str, board: NodeBoard, identity: Any
) -> None:
    reannounce = getattr(identity, "reannounce", None)
    if reannounce is None:  # only the lan identity announces
        return

    async def on(msg: Msg) -> None:
        try:
            event = decode_event(msg.data)
        except Exception:
            return  # the event consumers dead-letter it; here it is only not a reason
        if not isinstance(event, NodeSelfFenced) or event.node == node:
            return
        if board.role is Role.ACTIVE and not board.fenced:
            said = reannounce()
            log.info("%s hid (%s): %s again", event.node, event.payload.reason, said)

    delay = 0.5
    while True:
        raise_if_cancelled()  # a timed wait may have swallowed a stop
        try:
            await asyncio.wait_for(
                bus.nc.subscribe(event_subject(cluster, "NodeSelfFenced"), cb=on), 5
            )
            break
        except Exception as exc:  # the bus is away: try again (nats-py resubscribes after)
            log.warning("cannot follow other nodes' fences yet: %s", exc or type(exc).__name__)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
    await asyncio.Event().wait()  # the subscription lives as long as the agent
