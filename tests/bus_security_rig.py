"""A nats-server with Tandem's bus identities and TLS (issue 17), and clients logged in as
one identity that collect the server's permission errors.

nats-py reports a refused publish or subscription only asynchronously, to the error
callback; a refused request or JetStream publish simply gets no answer. ``Client`` keeps
every such report so that a test can say which subject was refused.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats

from helpers import eventually
from tandem.events.bus import Bus
from tandem.events.bus_identities import ADMIN, BusIdentity
from tandem.events.bus_tls import DEFAULT_SERVER_NAMES, TlsFiles
from tandem.events.connection import connect_options
from tandem.events.embedded import NatsServer
from tandem.events.secure_bus import SecureBusFiles
from tandem.events.settings import BusSettings

CLUSTERS = {"c1": ["a", "b"], "c2": ["x"]}
#: bcrypt's cheapest work factor: the suite connects often; production uses the default.
TEST_ROUNDS = 4


@dataclass
class SecuredBus:
    server: NatsServer
    files: SecureBusFiles

    @property
    def tls(self) -> TlsFiles:
        return self.files.tls

    @property
    def identities(self) -> dict[str, BusIdentity]:
        return self.files.identities

    @property
    def passwords(self) -> dict[str, str]:
        return self.files.passwords

    def settings(self, user: str, **overrides: Any) -> BusSettings:
        base: dict[str, Any] = {
            "servers": [self.server.url],
            "max_reconnect_attempts": 0,
            "request_timeout_s": 1.0,
        }
        return self.files.settings(user, **{**base, **overrides})

    def login_env(self, user: str) -> dict[str, str]:
        return self.files.login_env(user)

    def login_toml(self, user: str) -> str:
        return self.files.login_toml(user)

    async def connect(self, user: str, **overrides: Any) -> Client:
        settings = self.settings(user, **overrides)
        client = Client(user)
        nc = await nats.connect(**connect_options(settings, name=user), error_cb=client.on_error)
        client.bus = Bus(nc, settings)
        return client


@dataclass
class Client:
    user: str
    errors: list[str] = field(default_factory=list)
    bus: Bus = field(init=False)

    async def on_error(self, exc: Exception) -> None:
        self.errors.append(str(exc).lower())

    def refused(self, what: str, subject: str) -> bool:
        """Did the server refuse ``what`` ("publish" or "subscription") to ``subject``?"""
        wanted = f'permissions violation for {what} to "{subject.lower()}"'
        return any(wanted in e for e in self.errors)

    async def wait_refused(self, what: str, subject: str, timeout: float = 3.0) -> bool:
        """``refused``, once the server had time to say so (it answers a publish by -ERR)."""
        await self.bus.nc.flush()
        with contextlib.suppress(AssertionError):
            await eventually(lambda: self.refused(what, subject), timeout, f"{what} refused")
        return self.refused(what, subject)

    def violations(self) -> list[str]:
        return [e for e in self.errors if "permissions violation" in e]

    async def close(self) -> None:
        await self.bus.nc.close()


def start_secured_bus(
    store: Path,
    *,
    verify_clients: bool = False,
    server_names: Sequence[str] = DEFAULT_SERVER_NAMES,
    clusters: Mapping[str, Sequence[str]] = CLUSTERS,
) -> SecuredBus:
    files = SecureBusFiles.create(
        store / "secrets",
        clusters,
        server_names=server_names,
        verify_clients=verify_clients,
        rounds=TEST_ROUNDS,
    )
    server = NatsServer(
        store_dir=store / "nats", name="secured", extra_config=files.server_config()
    ).start()
    assert ADMIN in files.identities
    return SecuredBus(server, files)
