"""The ``tandem`` command: assembles the sub-commands; each lives in its own module."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from tandem.cli.actions import group_app
from tandem.cli.actions import register as register_actions
from tandem.cli.alerts import register as register_alerts
from tandem.cli.bus_secrets import secrets_command
from tandem.cli.busurl import cli_bus_settings, resolve_bus_url, service_login_env
from tandem.cli.dns import dns_app
from tandem.cli.history import register as register_history
from tandem.cli.logs import logs_command
from tandem.cli.maintenance import register as register_maintenance
from tandem.cli.nodectl import register as register_nodectl
from tandem.cli.options import ApiOption, TokenOption
from tandem.cli.services import SERVICES, lookup
from tandem.cli.srm import srm_app
from tandem.cli.tokens import token_app
from tandem.cli.vmware import vmware_app

app = typer.Typer(
    help="Tandem: keep a critical application running across servers and sites.",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
events_app = typer.Typer(help="Read the event stream.", no_args_is_help=True)
bus_app = typer.Typer(help="Look after the bus (NATS JetStream).", no_args_is_help=True)
app.add_typer(events_app, name="events")
app.add_typer(bus_app, name="bus")
bus_app.command("secrets")(secrets_command)
app.add_typer(group_app, name="group")
app.add_typer(srm_app, name="srm")
app.add_typer(token_app, name="token")
app.add_typer(vmware_app, name="vmware")
app.add_typer(dns_app, name="dns")
register_maintenance(app)
register_history(app)
register_nodectl(app)
register_alerts(app)
app.command("logs")(logs_command)

console = Console()
err = Console(stderr=True)


@app.callback()
def _root(
    stack: Annotated[
        str | None,
        typer.Option(
            "--stack",
            help="The `tandem up` stack to talk to (default: TANDEM_STACK, else the only one "
            "running).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Tandem: keep a critical application running across servers and sites."""
    if stack:
        from tandem.cli.stacks import STACK_ENV, check_stack_name

        os.environ[STACK_ENV] = check_stack_name(stack)


BusOption = Annotated[
    str | None,
    typer.Option(
        "--bus",
        help="Bus URL (default: TANDEM_BUS_SERVERS, a running `tandem up`, or "
        "nats://127.0.0.1:4222). Login: TANDEM_BUS_USER/_PASSWORD, else the admin of "
        "TANDEM_SECRETS_DIR or of the running `tandem up`.",
    ),
]


@app.command()
def version() -> None:
    """Print the versions of Tandem and of the embedded nats-server."""
    import subprocess

    from tandem.events.embedded import NatsServerError, nats_server_binary
    from tandem.events.runtime import tandem_version

    console.print(f"tandem {tandem_version()}")
    try:
        out = subprocess.run(
            [nats_server_binary(), "--version"], capture_output=True, text=True, timeout=10
        )
        console.print(f"embedded {out.stdout.strip()}")
    except (NatsServerError, OSError, subprocess.TimeoutExpired) as exc:
        console.print(f"embedded nats-server: unavailable ({exc})")


@app.command()
def up(
    store_dir: Annotated[
        Path | None,
        typer.Option(help="Keep the bus data here (default: a temp dir, removed at exit)."),
    ] = None,
    nats_port: Annotated[
        int, typer.Option(help="Client port of the embedded bus; 0 for a random one.")
    ] = 4222,
    demo: Annotated[
        bool,
        typer.Option(help="Also run a demo pair (cluster 'demo', nodes primary and secondary)."),
    ] = True,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            help="The stack's name (default: the store folder's name, or tandem-<pid>); "
            "other commands pick it with `tandem --stack NAME` or TANDEM_STACK.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Start an embedded nats-server and every service, supervised; Ctrl-C stops all."""
    from tandem.cli.stacks import check_stack_name
    from tandem.cli.up import run_up
    from tandem.events.runtime import configure_logging

    if name is not None:
        check_stack_name(name)
    configure_logging(os.environ.get("TANDEM_LOG_LEVEL", "WARNING"))
    raise typer.Exit(asyncio.run(run_up(console, store_dir, nats_port, demo, name)))


@app.command()
def agent(
    config: Annotated[Path, typer.Option("--config", help="The node's TOML config file.")],
    check: Annotated[
        bool, typer.Option("--check", help="Validate and print the effective config; exit.")
    ] = False,
) -> None:
    """Run the node agent (replicator, monitor, step executor) of one protected server."""
    from tandem.agent.main import main as agent_main

    raise typer.Exit(agent_main(["--config", str(config), *(["--check"] if check else [])]))


@app.command("run")
def run_service(
    service: Annotated[str, typer.Argument(help=f"One of: {', '.join(SERVICES)}.")],
    bus: BusOption = None,
    cluster: Annotated[str | None, typer.Option(help="Cluster (node-side services).")] = None,
    node: Annotated[str | None, typer.Option(help="Node name (node-side services).")] = None,
) -> None:
    """Run one service in the foreground until Ctrl-C or SIGTERM."""
    from tandem.events.runtime import service_main
    from tandem.events.settings import SettingsError

    try:
        entry = lookup(service)
        spec = entry.spec()
    except LookupError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    os.environ["TANDEM_BUS_SERVERS"] = resolve_bus_url(bus)
    for key, value in (("CLUSTER", cluster), ("NODE", node)):
        if value is not None:
            os.environ[f"{entry.env_prefix}{key}"] = value
    try:
        # Beside a running `tandem up` (or with TANDEM_SECRETS_DIR): the service's own identity.
        os.environ.update(service_login_env(entry.name, cluster, node))
    except SettingsError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    raise typer.Exit(service_main(spec))


@events_app.command("tail")
def events_tail(
    bus: BusOption = None,
    cluster: Annotated[str | None, typer.Option(help="Only this cluster's events.")] = None,
    type_: Annotated[str | None, typer.Option("--type", help="Only events of this type.")] = None,
    count: Annotated[
        int | None,
        typer.Option(
            help="The last N matching events (waiting for new ones while fewer happened), "
            "then exit.",
            min=1,
        ),
    ] = None,
    history: Annotated[
        int | None,
        typer.Option(
            help="Start this many matching events back (0: only new events; default 10, "
            "with --count N: N).",
            min=0,
            show_default=False,
        ),
    ] = None,
    idle_timeout: Annotated[
        float | None, typer.Option(help="Exit after this many seconds without an event.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per line (with its stream seq).")
    ] = False,
    full: Annotated[bool, typer.Option("--full", help="Payload values not shortened.")] = False,
) -> None:
    """Print the last events (newest last), then new ones as they happen, one line each."""
    from tandem.cli.events_tail import tail
    from tandem.events.names import InvalidNameError

    try:
        asyncio.run(
            tail(
                console,
                cli_bus_settings(bus, reads_only=True),
                cluster=cluster,
                event_type=type_,
                count=count,
                history=history,
                idle_timeout_s=idle_timeout,
                as_json=as_json,
                full=full,
            )
        )
    except (InvalidNameError, ValueError) as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    except (OSError, ConnectionError) as exc:
        err.print(f"[red]cannot reach the bus: {exc}[/]")
        raise typer.Exit(3) from None
    except KeyboardInterrupt:
        pass


@app.command()
def verify(
    cluster: Annotated[
        str | None, typer.Option(help="Verify this cluster's replicas through its Active.")
    ] = None,
    node: Annotated[
        str | None, typer.Option(help="The Active node (default: from tandem_roles).")
    ] = None,
    target: Annotated[str | None, typer.Option(help="Only this Passive (default: all).")] = None,
    source: Annotated[Path | None, typer.Option(help="Local mode: the source folder.")] = None,
    replica: Annotated[
        Path | None, typer.Option(help="Local mode: the replica folder to fix.")
    ] = None,
    bus: BusOption = None,
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 3600.0,
) -> None:
    """Verify & synchronize: compare by block hashes, send only what differs, delete extras."""
    from tandem.cli.verify import verify_cluster, verify_local
    from tandem.events.errors import CommandFailedError
    from tandem.events.names import InvalidNameError
    from tandem.events.settings import SettingsError

    if (source is None) != (replica is None):
        err.print("[red]local mode needs both --source and --replica[/]")
        raise typer.Exit(2)
    if source is not None and replica is not None:
        if not source.is_dir():
            err.print(f"[red]--source {source} is not a folder[/]")
            raise typer.Exit(2)
        raise typer.Exit(0 if verify_local(console, source, replica) else 1)
    if cluster is None:
        err.print("[red]give --cluster (or --source and --replica for two local folders)[/]")
        raise typer.Exit(2)
    try:
        ok = asyncio.run(
            verify_cluster(console, cli_bus_settings(bus), cluster, node, target, timeout)
        )
    except (InvalidNameError, LookupError, SettingsError) as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    except CommandFailedError as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from None
    except (OSError, ConnectionError) as exc:
        err.print(f"[red]cannot reach the bus: {exc}[/]")
        raise typer.Exit(3) from None
    raise typer.Exit(0 if ok else 1)


@bus_app.command("provision")
def bus_provision(
    bus: BusOption = None,
    first_active: Annotated[
        list[str] | None,
        typer.Option(
            "--first-active",
            help="CLUSTER=NODE: write a new cluster's first role record (NODE Active at "
            "epoch 1) unless it has one; agents may not write it themselves (repeatable).",
        ),
    ] = None,
) -> None:
    """Create or update Tandem's streams and buckets (limits from TANDEM_STREAMS_*)."""
    from tandem.events.bus import Bus
    from tandem.events.roles import claim_first_role
    from tandem.events.settings import SettingsError, load_stream_settings
    from tandem.events.subjects import ROLES_BUCKET

    firsts = [value.partition("=") for value in first_active or []]
    if any(not sep or not cluster or not node for cluster, sep, node in firsts):
        err.print("[red]--first-active wants CLUSTER=NODE[/]")
        raise typer.Exit(2)

    async def go() -> list[str]:
        async with await Bus.connect(cli_bus_settings(bus)) as b:
            lines = await b.provision(load_stream_settings())
            for cluster, _, node in firsts:
                kv = await b.kv(ROLES_BUCKET)
                why = "first pairing (tandem bus provision)"
                held = await asyncio.wait_for(claim_first_role(kv, cluster, node, why), 10)
                lines.append(f"role of {cluster}: {held.active} Active at epoch {held.epoch}")
            return lines

    try:
        for line in asyncio.run(go()):
            console.print(line)
    except (SettingsError, ValueError) as exc:
        err.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from None
    except (OSError, ConnectionError, TimeoutError) as exc:
        err.print(f"[red]cannot provision the bus: {exc}[/]")
        raise typer.Exit(3) from None


@app.command()
def status(
    cluster: Annotated[str | None, typer.Option(help="Only this cluster.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="The API's cluster views.")] = False,
    watch: Annotated[
        float | None,
        typer.Option(help="Redraw every SECONDS until Ctrl-C (e.g. --watch 2).", min=0.2),
    ] = None,
    api: ApiOption = None,
    token: TokenOption = None,
) -> None:
    """Show every node of every cluster (or one): role and since when, health, heartbeat
    and lease age, lag; running operations, open alerts and the last failed saga.
    """
    from tandem.cli import operate, overview

    if as_json:
        code = overview.run_status_json(console, err, api=api, token=token, cluster=cluster)
    elif watch is not None:
        code = overview.run_watch(
            console, err, api=api, token=token, cluster=cluster, every_s=watch
        )
    else:
        code = operate.run_status(console, err, api=api, token=token, cluster=cluster)
    raise typer.Exit(code)


@app.command("list")
def list_clusters(api: ApiOption = None, token: TokenOption = None) -> None:
    """One line per cluster: its service, epoch and nodes (* the Active)."""
    from tandem.cli import overview

    raise typer.Exit(overview.run_list(console, err, api=api, token=token))


# After the commands above: the app lists its commands in the order they were added.
register_actions(app)


def main() -> int:
    # nats-py's protocol returns True from eof_received, which asyncio's TLS transport ignores
    # and warns about when a TLS connection closes: noise on every command's stderr.
    logging.getLogger("asyncio").addFilter(lambda r: "eof_received" not in r.getMessage())
    from tandem.cli.helptext import polish

    polish(app)()
    return 0
