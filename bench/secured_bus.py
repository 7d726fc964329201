"""The benchmarks' nats-server, secured as a deployment's is (issue 17): logins and TLS.

Every figure is measured on such a bus, the baseline beside it too. The benchmark and every
process it starts log in as the admin through the environment (``TANDEM_BUS_USER``...).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tandem.events.embedded import NatsServer
from tandem.events.secure_bus import SecureBusFiles


def start_secured_server(store_dir: Path, **server: Any) -> NatsServer:
    """A started ``NatsServer(store_dir, **server)`` with this deployment's secrets in
    ``store_dir/secrets``; this process's environment then logs in to it as the admin."""
    secrets = SecureBusFiles.create(store_dir / "secrets", {})
    login = secrets.login_env("admin")
    login.pop("TANDEM_BUS_INBOX_PREFIX")  # the admin may use the shared _INBOX
    os.environ.update(login)
    return NatsServer(store_dir=store_dir, extra_config=secrets.server_config(), **server).start()
