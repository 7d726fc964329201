"""``tandem up``: an embedded nats-server and every service, supervised, with a demo pair.

The bus requires a login and TLS (issue 17): ``tandem up`` writes the deployment's secrets to
``<store>/bus-secrets`` (``SecureBusFiles``: kept across runs of the same store), provisions
as the admin, and starts each service logged in as its own least-privilege identity.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from tandem.cli.busurl import service_identity
from tandem.cli.demo import DEMO_CLUSTER, DEMO_NODES, write_demo_configs
from tandem.cli.services import CENTRAL, SERVICES
from tandem.cli.stacks import check_stack_name, default_name, running, stack_file
from tandem.cli.supervisor import Child, Supervisor, parent_death
from tandem.cli.up_stack import (
    AlreadyRunning,
    check_name_free,
    lock_store,
    remove_discovery,
    stack_ports,
    write_discovery,
)
from tandem.cli.up_table import stack_table as _table
from tandem.events.api_tokens import file_line
from tandem.events.bus import Bus
from tandem.events.bus_identities import ADMIN, VIEWER, agent_user
from tandem.events.catalog import ServiceStarted
from tandem.events.embedded import NatsServer, free_port
from tandem.events.private_files import write_private
from tandem.events.registry import decode_event
from tandem.events.roles import claim_first_role
from tandem.events.secure_bus import SecureBusFiles
from tandem.events.settings import load_stream_settings
from tandem.events.subjects import ROLES_BUCKET, events_filter


def _port_free(port: int) -> bool:
    """Nobody listens on ``port``, and no running stack has it (it may not listen yet)."""
    if port in stack_ports():
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class ApiAccess:
    """The orchestrator's REST API of this `tandem up`, with demo tokens made for this run."""

    port: int
    viewer_token: str
    operator_token: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def new(cls) -> ApiAccess:
        """8700 unless it is taken (``_port_free``)."""
        port = 8700 if _port_free(8700) else free_port()
        return cls(port, secrets.token_urlsafe(24), secrets.token_urlsafe(24))

    def write_tokens_file(self, path: Path) -> None:
        """The orchestrator's tokens file: hashed (its reader learns no token), 0600."""
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [file_line("viewer", self.viewer_token), file_line("operator", self.operator_token)]
        write_private(path, "# made by tandem up for this run\n" + "\n".join(lines) + "\n")

    def env(self, tokens_file: Path) -> dict[str, str]:
        return {
            "TANDEM_ORCHESTRATOR_API_PORT": str(self.port),
            "TANDEM_ORCHESTRATOR_TOKENS_FILE": str(tokens_file),
            # Only this run's tokens: none a TANDEM_ORCHESTRATOR_TOKENS of the user's shell adds.
            "TANDEM_ORCHESTRATOR_TOKENS": "",
        }


def plan_children(
    bus_url: str,
    logs: Path,
    demo: bool,
    root: Path | None = None,
    bus_port: int = 4222,
    api: ApiAccess | None = None,
    public_port: int | None = None,
    secrets: SecureBusFiles | None = None,
    node_ports: dict[str, int] | None = None,
) -> list[Child]:
    """The children of ``tandem up``. With ``secrets`` each logs in as its own identity:
    a central service by its environment, a demo node by its config's ``[bus]`` table."""
    python = sys.executable
    base = {"TANDEM_BUS_SERVERS": bus_url}

    def login(service: str) -> dict[str, str]:
        user = service_identity(service, None, None)
        return secrets.login_env(user) if secrets is not None and user is not None else {}

    api = api or ApiAccess.new()
    # The orchestrator's outbox lives beside the logs: an event in flight when it is killed
    # is sent after its restart. Its tokens file too.
    state_dir = logs.parent / "orchestrator"
    tokens_file = state_dir / "api-tokens"
    api.write_tokens_file(tokens_file)
    orchestrator_env = {**api.env(tokens_file), "TANDEM_ORCHESTRATOR_STATE_DIR": str(state_dir)}
    own_env = {
        "orchestrator": orchestrator_env,
        "notifier": write_demo_notifier(logs.parent / "notifier", api.url),
    }
    children = [
        Child(
            e.name,
            [python, "-m", e.module],
            {**base, **login(e.name), **own_env.get(e.name, {})},
            logs / f"{e.name}.log",
        )
        for e in CENTRAL
    ]
    if demo:
        agent = SERVICES["agent"]
        root = root if root is not None else Path(tempfile.mkdtemp(prefix="tandem-demo-"))
        public = public_port or demo_public_port()
        logins = (
            {n: secrets.login_toml(agent_user(DEMO_CLUSTER, n)) for n in DEMO_NODES}
            if secrets is not None
            else {}
        )
        ports = node_ports or demo_ports()
        configs = write_demo_configs(root, bus_url, bus_port, ports, public, logins)
        for node in DEMO_NODES:
            argv = [python, "-m", agent.module, "--config", str(configs[node])]
            children.append(Child(f"agent-{node}", argv, dict(base), logs / f"agent-{node}.log"))
    return children


DEMO_NOTIFICATIONS = "notifications.jsonl"


def write_demo_notifier(folder: Path, api_url: str) -> dict[str, str]:
    """The notifier's demo route (every alert and role change, as JSON lines, in
    ``<store>/notifier/notifications.jsonl``) and its environment."""
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "notifier.toml"
    config.write_text(
        "# made by tandem up: every alert and role change, one JSON line each\n"
        f'external_url = "{api_url}"\n\n'
        "[[routes]]\n"
        'name = "demo-file"\n'
        "[routes.channel]\n"
        'type = "file"\n'
        f'path = "{DEMO_NOTIFICATIONS}"\n',
        encoding="utf-8",
    )
    return {
        "TANDEM_NOTIFIER_CONFIG": str(config),
        "TANDEM_NOTIFIER_STATE_DIR": str(folder / "state"),
    }


def demo_public_port() -> int:
    """Where clients reach the demo application, whichever node is Active."""
    return 8080 if _port_free(8080) else free_port()


def demo_ports() -> dict[str, int]:
    """The demo application's port on each node (fixed when free, for a stable URL)."""
    wanted = {"primary": 8081, "secondary": 8082}
    return {n: p if _port_free(p) else free_port() for n, p in wanted.items()}


async def _wait_started(bus: Bus, expected: int, timeout_s: float) -> list[ServiceStarted]:
    """Collect ServiceStarted events published since ``up`` began, until ``expected`` arrived."""
    seen: list[ServiceStarted] = []
    sub = await bus.js.subscribe(events_filter(event_type="ServiceStarted"), ordered_consumer=True)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while len(seen) < expected and loop.time() < deadline:
            try:
                msg = await sub.next_msg(timeout=max(0.1, deadline - loop.time()))
            except Exception:
                break
            event = decode_event(msg.data)
            if isinstance(event, ServiceStarted) and event.payload.pid != os.getpid():
                seen.append(event)
    finally:
        await sub.unsubscribe()
    return seen


def bus_secrets(root: Path, demo: bool) -> SecureBusFiles:
    """The bus's CA, certificates and passwords in ``<root>/bus-secrets``: made at the first
    run, kept by the next ones of the same store (``tandem bus secrets --rotate`` changes
    them); the identities follow whether the demo pair runs."""
    clusters = {DEMO_CLUSTER: list(DEMO_NODES)} if demo else {}
    return SecureBusFiles.create(root / "bus-secrets", clusters)


async def write_first_role(bus: Bus, timeout_s: float = 10.0) -> None:
    """The demo's first role record (primary Active, epoch 1), unless it has one: agents
    may not write ``tandem_roles``, so the node configured Active would wait for ever. A
    record already there (an earlier run of this store) is left as it is."""
    kv = await bus.kv(ROLES_BUCKET)
    await asyncio.wait_for(
        claim_first_role(kv, DEMO_CLUSTER, DEMO_NODES[0], "first pairing (tandem up)"),
        timeout_s,
    )


async def run_up(
    console: Console,
    store_dir: Path | None,
    nats_port: int,
    demo: bool,
    name: str | None = None,
) -> int:
    """Exit 0 stopped by Ctrl-C / SIGTERM; 2 another stack holds this store or this name."""
    temp = store_dir is None
    root = Path(tempfile.mkdtemp(prefix="tandem-up-")) if store_dir is None else store_dir
    root = root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    stack = check_stack_name(name) if name else default_name(store_dir, os.getpid())
    lock = None
    try:
        lock = lock_store(root)
        check_name_free(stack)
    except AlreadyRunning as exc:
        if lock is not None:
            lock.close()
        console.print(f"[red]{escape(str(exc))}[/]", soft_wrap=True)
        if temp:
            shutil.rmtree(root, ignore_errors=True)
        return 2
    others = [s.describe() for s in running() if s.pid != os.getpid()]
    if others:
        console.print(
            f"[yellow]also running on this host: {escape(', '.join(others))}; this one is stack "
            f"{stack}: while more than one runs, the other commands need `tandem --stack NAME` "
            "(or TANDEM_STACK=NAME)[/]",
            soft_wrap=True,
        )
    try:
        return await _run_stack(console, root, temp, stack, nats_port, demo)
    finally:
        lock.close()


async def _run_stack(
    console: Console, root: Path, temp: bool, stack: str, nats_port: int, demo: bool
) -> int:
    port = nats_port
    if port > 0 and not _port_free(port):
        console.print(f"[yellow]port {port} is taken; the bus gets a random port instead[/]")
        port = -1
    secrets = await asyncio.to_thread(bus_secrets, root, demo)
    server = NatsServer(
        store_dir=root / "nats",
        port=port if port > 0 else -1,
        extra_config=secrets.server_config(),
        # A `tandem up` killed hard takes its bus with it (as it does its services).
        preexec_fn=parent_death(),
    )
    supervisor = Supervisor(lambda line: console.print(f"[yellow]supervisor:[/] {line}"))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    bus: Bus | None = None
    discovery = stack_file(stack)
    try:
        # Launched from this (the main) thread: the parent-death signal follows the thread
        # that forked, and a worker thread of to_thread may end before this process does.
        server.launch()
        await asyncio.to_thread(server.wait_ready)
        bus = await Bus.connect(secrets.settings(ADMIN, servers=[server.url]), name="tandem-up")
        await bus.provision(load_stream_settings())
        if demo:
            await write_first_role(bus)
        api = ApiAccess.new()
        public_port = demo_public_port()
        node_ports = demo_ports() if demo else {}
        # Written before anything listens: a stack started meanwhile leaves these ports.
        held = [api.port, public_port, *node_ports.values()]
        discovery = _write_state(server, root, [], api, secrets, stack, held)
        children = plan_children(
            server.url,
            root / "logs",
            demo,
            root,
            server.client_port or 4222,
            api,
            public_port,
            secrets,
            node_ports,
        )
        for child in children:
            await supervisor.start(child)
        discovery = _write_state(server, root, children, api, secrets, stack, held)
        started = await _wait_started(
            bus, expected=len(children) + 2 * demo * len(DEMO_NODES), timeout_s=30
        )
        console.print(_table(server, root, children, started, api, public_port, stack))
        _print_tokens(console, api, discovery)
        _print_bus_logins(console, secrets)
        console.print(
            "Try: [bold]tandem status[/]   [bold]tandem switchover demo[/]   "
            "[bold]tandem events tail[/]   Stop: [bold]Ctrl-C[/]"
        )
        await stop.wait()
        console.print("stopping services...")
        return 0
    finally:
        await supervisor.stop_all()
        if bus is not None:
            await bus.close()
        await asyncio.to_thread(server.stop)
        remove_discovery(discovery)
        if temp:
            shutil.rmtree(root, ignore_errors=True)
        console.print("stopped.")


def _print_tokens(console: Console, api: ApiAccess, discovery: Path) -> None:
    """The tokens go to a terminal only: output sent to a file or a pipe (a CI log, a
    journal) would keep them there. They are in the state file (0600) either way."""
    console.print("API tokens for this run (the tandem commands here find them by themselves):")
    isatty = getattr(console.file, "isatty", None)
    if not (callable(isatty) and isatty()):
        console.print(
            f"  not shown (the output is not a terminal): see {discovery}", soft_wrap=True
        )
        return
    console.print(f"  operator (switchover, failover): {api.operator_token}", soft_wrap=True)
    console.print(f"  viewer (read only):              {api.viewer_token}", soft_wrap=True)


def _print_bus_logins(console: Console, secrets: SecureBusFiles) -> None:
    """How to log in to the bus by hand: the environment of a viewer and of an operator
    (admin). Passwords, like the API tokens, go to a terminal only."""
    console.print(
        "Bus logins (TLS; the tandem commands here log in as admin by themselves):",
        soft_wrap=True,
    )
    isatty = getattr(console.file, "isatty", None)
    shown = callable(isatty) and isatty()
    for who, user in (("viewer (reads events)", VIEWER), ("operator (admin)", ADMIN)):
        env = secrets.login_env(user)
        if not shown:
            del env["TANDEM_BUS_PASSWORD"]
        line = " ".join(f"{k}={v}" for k, v in env.items())
        console.print(f"  {who}: {line}", soft_wrap=True, highlight=False, markup=False)
    passwords = secrets.folder / "passwords.json"
    if shown:
        console.print(f"  passwords: {passwords} (owner only)", soft_wrap=True)
    else:
        console.print(
            "  passwords not shown (the output is not a terminal): TANDEM_BUS_PASSWORD is "
            f"the user's entry in {passwords} (owner only)",
            soft_wrap=True,
        )


def _write_state(
    server: NatsServer,
    root: Path,
    children: list[Child],
    api: ApiAccess,
    secrets: SecureBusFiles | None = None,
    name: str = "tandem",
    ports: list[int] | None = None,
) -> Path:
    """The stack's discovery file (``up_stack.write_discovery``), 0600: it holds this run's
    API tokens. The bus passwords stay in their own folder: the other commands find them by
    its path (busurl.cli_bus_settings)."""
    return write_discovery(
        name,
        {
            "bus_url": server.url,
            "monitor_url": f"http://127.0.0.1:{server.http_port}" if server.http_port else None,
            "store_dir": str(root),
            "bus_secrets": str(secrets.folder) if secrets is not None else None,
            "bus_ca_file": str(secrets.tls.ca_cert) if secrets is not None else None,
            "api_url": api.url,
            "viewer_token": api.viewer_token,
            "operator_token": api.operator_token,
            "services": {c.name: c.pid for c in children},
            "logs_dir": str(root / "logs"),
            "ports": ports or [api.port],
        },
    )
