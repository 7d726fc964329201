"""The node agent's process entry: ``python -m tandem.agent --config node.toml [--check]``
(``tandem agent`` is the same with the CLI's output). Exit codes: 0 clean stop or valid
config, 2 invalid config, 3 bus unreachable."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path

from tandem.agent.config import NodeConfig, effective_config, load_node_config
from tandem.agent.service import run_agent
from tandem.events.bus import Bus
from tandem.events.connection import BusRefusedLoginError
from tandem.events.runtime import configure_logging, until_signalled
from tandem.events.settings import SettingsError, load_stream_settings
from tandem.events.transient import retry_transient

log = logging.getLogger(__name__)


async def serve(config: NodeConfig, *, connect_for_s: float | None = None) -> None:
    """Connect (by default waiting for the bus as long as it takes), then run the agent."""
    bus = await Bus.connect(
        config.bus, name=f"tandem-agent-{config.cluster}-{config.node}", retry_for_s=connect_for_s
    )
    try:
        streams = load_stream_settings()
        await retry_transient(
            "making sure the streams exist",
            lambda: bus.provision(streams, update_existing=False),
        )
        await run_agent(config, bus)
    finally:
        await bus.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tandem.agent", description=__doc__)
    parser.add_argument(
        "--config",
        type=Path,
        default=os.environ.get("TANDEM_AGENT_CONFIG"),
        help="the node's TOML config file (default: TANDEM_AGENT_CONFIG)",
    )
    parser.add_argument("--check", action="store_true", help="validate, print, exit")
    args = parser.parse_args(argv)
    if args.config is None:
        parser.error("--config is required (or set TANDEM_AGENT_CONFIG)")
    configure_logging()
    try:
        config = load_node_config(args.config)
    except SettingsError as exc:
        sys.stderr.write(f"{exc}\n")
        return 2
    if args.check:
        sys.stdout.write(json.dumps(effective_config(config), indent=2) + "\n")
        return 0
    try:
        asyncio.run(until_signalled(serve(config), stop_deadline_s=config.shutdown.deadline_s))
    except (SettingsError, BusRefusedLoginError) as exc:
        log.error("%s", exc)
        return 2
    except ConnectionError as exc:
        log.error("%s", exc)
        return 3
    return 0
