"""Where the bus is and how the CLI logs in to it.

Where: --bus, else TANDEM_BUS_SERVERS, else a running ``tandem up``, else 4222.
As whom: an explicit login in the environment (``TANDEM_BUS_USER``, a token, a creds or nkey
file), else the admin identity of a bus secrets folder (``TANDEM_SECRETS_DIR``, else the one
of the running ``tandem up`` when the command talks to its bus), else none (an open bus).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tandem.events.secure_bus import SecureBusFiles
    from tandem.events.settings import BusSettings

DEFAULT_URL = "nats://127.0.0.1:4222"
#: A bus secrets folder (``tandem bus secrets``): the CLI logs in as its admin. The compose
#: file reads the same variable for where the folder is.
SECRETS_ENV = "TANDEM_SECRETS_DIR"
#: Any of these in the environment is a login the user chose: the CLI then adds none.
_EXPLICIT_LOGIN = (
    "TANDEM_BUS_USER",
    "TANDEM_BUS_TOKEN",
    "TANDEM_BUS_CREDS_FILE",
    "TANDEM_BUS_NKEY_SEED_FILE",
)
#: Services of a node: they log in as the node's agent identity.
_NODE_SIDE = ("agent", "replicator", "monitor")


def state_file() -> Path:
    """Where an older ``tandem up`` recorded itself; each stack now has its own file
    (``tandem.cli.stacks``)."""
    from tandem.cli.stacks import legacy_file

    return legacy_file()


def read_up_state() -> dict[str, Any] | None:
    """The state of the ``tandem up`` stack the command talks to (``stacks.select``)."""
    from tandem.cli.stacks import select

    stack = select()
    return stack.state if stack is not None else None


def resolve_bus_url(flag: str | None) -> str:
    if flag:
        return flag
    env = os.environ.get("TANDEM_BUS_SERVERS")
    if env:
        return env
    state = read_up_state()
    if state and isinstance(state.get("bus_url"), str):
        return str(state["bus_url"])
    return DEFAULT_URL


def service_identity(service: str, cluster: str | None, node: str | None) -> str | None:
    """The identity ``service`` logs in as; None when it has none (a node-side service
    without its cluster and node)."""
    from tandem.events import bus_identities as ids

    central = {
        "orchestrator": ids.ORCHESTRATOR,
        "dns_updater": ids.DNS_UPDATER,
        "vmware_bridge": ids.VMWARE_BRIDGE,
        "notifier": ids.NOTIFIER,
    }
    if service in central:
        return central[service]
    if service in _NODE_SIDE and cluster and node:
        return ids.agent_user(cluster, node)
    return None


def explicit_login() -> bool:
    return any(os.environ.get(key) for key in _EXPLICIT_LOGIN)


def secrets_folder(bus_url: str) -> Path | None:
    """The bus secrets the CLI logs in with for ``bus_url``: ``TANDEM_SECRETS_DIR``, else
    those of the running ``tandem up`` if ``bus_url`` is its bus (another bus has other
    passwords)."""
    env = os.environ.get(SECRETS_ENV)
    if env:
        return Path(env)
    from tandem.cli.stacks import find

    stack = find("bus_url", bus_url)
    if stack is not None and stack.get("bus_secrets"):
        return Path(str(stack.get("bus_secrets")))
    return None


def load_secrets(bus_url: str) -> SecureBusFiles | None:
    """The secrets folder for ``bus_url`` (``secrets_folder``), read; ``SettingsError`` when
    it is named but holds none."""
    from tandem.events.secure_bus import SecureBusFiles
    from tandem.events.settings import SettingsError

    folder = secrets_folder(bus_url)
    if folder is None:
        return None
    try:
        return SecureBusFiles.load(folder)
    except (OSError, ValueError) as exc:
        raise SettingsError(f"bus secrets {folder}: {exc}") from None


def cli_bus_settings(flag: str | None, *, reads_only: bool = False) -> BusSettings:
    """The bus settings of a CLI command (see the module's docstring): the admin's login
    from the secrets folder (the viewer's for a command that only reads events, when the
    folder has one) unless the environment names a login itself. The other fields
    (timeouts...) come from ``TANDEM_BUS_*`` as usual."""
    from tandem.events.bus_identities import ADMIN, VIEWER
    from tandem.events.settings import load_bus_settings

    url = resolve_bus_url(flag)
    files = None if explicit_login() else load_secrets(url)
    if files is None:
        return load_bus_settings(servers=url)
    user = VIEWER if reads_only and VIEWER in files.identities else ADMIN
    return files.settings(user, servers=url)


def service_login_env(service: str, cluster: str | None, node: str | None) -> dict[str, str]:
    """For ``tandem run``: the environment that logs ``service`` in as its own identity,
    from the secrets folder of its bus; empty when the user gave a login or there is none."""
    user = service_identity(service, cluster, node)
    if user is None or explicit_login():
        return {}
    files = load_secrets(resolve_bus_url(None))
    if files is None or user not in files.identities:
        return {}
    return files.login_env(user)
